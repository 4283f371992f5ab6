"""Texts for the logits family: one token sequence read by both models, with each position's next token."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch.utils.data import Dataset

from components.data.pipeline import pad_rows
from components.losses.logit_losses import IGNORED
from components.packed_sequences import PackedSequences


@dataclass
class TextBatch:
    """One padded batch; `labels` holds each real position's next token (IGNORED where the text ends)."""

    indices: torch.Tensor
    student_ids: torch.Tensor
    student_mask: torch.Tensor
    student_packing: PackedSequences
    labels: torch.Tensor
    student_tokens: int

    def _map(self, move) -> TextBatch:
        values = {}
        for item in fields(self):
            value = getattr(self, item.name)
            values[item.name] = move(value) if isinstance(value, (torch.Tensor, PackedSequences)) else value
        return TextBatch(**values)

    def to(self, device: torch.device) -> TextBatch:
        return self._map(lambda value: value.to(device, non_blocking=True))

    def pin_memory(self) -> TextBatch:
        """Called by DataLoader(pin_memory=True) so host-to-GPU copies overlap compute."""
        return self._map(lambda value: value.pin_memory())


class TextSamples(Dataset):
    """Text i -> its token ids, cut at `max_length` (`prompts`: the texts, named as the data section names them)."""

    def __init__(self, prompts: list[str], tokenizer, max_length: int) -> None:
        self.prompts = prompts
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, index: int) -> dict:
        ids = self.tokenizer(self.prompts[index], truncation=True, max_length=self.max_length)["input_ids"]
        return {"index": index, "student_ids": ids}


class TextCollator:
    """Pads to the longest text of the batch and shifts each row by one for its next-token labels."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> TextBatch:
        width = max(len(item["student_ids"]) for item in items)
        ids, mask = pad_rows([item["student_ids"] for item in items], width, self.pad_id)
        following = torch.full_like(ids, IGNORED)
        following[:, :-1] = torch.where(mask[:, 1:], ids[:, 1:], IGNORED)
        return TextBatch(
            indices=torch.tensor([item["index"] for item in items]),
            student_ids=ids,
            student_mask=mask,
            student_packing=PackedSequences.from_mask(mask),
            labels=following[mask],
            student_tokens=int(mask.sum()),
        )

"""Texts for the logits family: one token sequence read by both models, with each position's next token."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from components.data.pipeline import MovableBatch, pad_rows
from components.losses.logit_losses import IGNORED
from components.packed_sequences import PackedSequences


@dataclass
class TextBatch(MovableBatch):
    """One padded batch; `labels` holds each real position's next token (IGNORED where the text ends)."""

    indices: torch.Tensor
    student_ids: torch.Tensor
    student_mask: torch.Tensor
    student_packing: PackedSequences
    labels: torch.Tensor
    student_tokens: int
    scored: torch.Tensor | None = None  # over the real tokens: where the loss applies (None: everywhere)


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


def next_token_labels(ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """For each real token of right-padded rows, in order, the token after it (IGNORED where the text ends)."""
    following = torch.full_like(ids, IGNORED)
    following[:, :-1] = torch.where(mask[:, 1:], ids[:, 1:], IGNORED)
    return following[mask]


class TextCollator:
    """Pads to the longest text of the batch and shifts each row by one for its next-token labels."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, items: list[dict]) -> TextBatch:
        width = max(len(item["student_ids"]) for item in items)
        ids, mask = pad_rows([item["student_ids"] for item in items], width, self.pad_id)
        return TextBatch(
            indices=torch.tensor([item["index"] for item in items]),
            student_ids=ids,
            student_mask=mask,
            student_packing=PackedSequences.from_mask(mask),
            labels=next_token_labels(ids, mask),
            student_tokens=int(mask.sum()),
        )

"""Texts for the logits family: one token sequence read by both models, with each position's next token."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from components.data.pipeline import MovableBatch, answer_positions, pad_rows
from components.data.prompt_ids import prompt_ids
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
    teacher_ids: torch.Tensor | None = None  # what the teacher reads, when not student_ids (denoising: clean text)
    prompt_lengths: torch.Tensor | None = None  # per row, tokens before the teacher's answer (None: no answers)
    student_lengths: tuple[int, ...] | None = None  # per row, real tokens, on the host (no device read to learn them)


class TextSamples(Dataset):
    """Text i -> its token ids, cut at `max_length` (`prompts`: the texts, named as the data section names them).

    With `answers` (sequence-level distillation) an item is prompt i followed by answer i and the tokenizer's
    end-of-text, and `answer_start` says where the answer begins: the answer is kept whole where it fits and the
    prompt is cut to make room."""

    def __init__(self, prompts: list[str], tokenizer, max_length: int, answers: list[str] | None = None) -> None:
        self.prompts = prompts
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.answers = answers

    def __len__(self) -> int:
        return len(self.prompts)

    def _answer_ids(self, answer: str) -> list[int]:
        ids = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
        end = [self.tokenizer.eos_token_id] if self.tokenizer.eos_token_id is not None else []
        return (ids + end)[: self.max_length - 1]

    def __getitem__(self, index: int) -> dict:
        if self.answers is None:
            ids = self.tokenizer(self.prompts[index], truncation=True, max_length=self.max_length)["input_ids"]
            return {"index": index, "student_ids": ids}
        answer = self._answer_ids(self.answers[index])
        room = self.max_length - len(answer)
        [prompt] = prompt_ids(self.tokenizer, [self.prompts[index]], room)  # the answer continues the prompt
        return {"index": index, "student_ids": prompt + answer, "answer_start": len(prompt)}

    def token_lengths(self) -> list[int]:
        """Tokens of each item, for batching by length (one tokenizer call per text, not per item)."""
        if self.answers is None:
            prompts = self.tokenizer(self.prompts, truncation=True, max_length=self.max_length)["input_ids"]
            return [len(ids) for ids in prompts]
        prompts = prompt_ids(self.tokenizer, self.prompts, self.max_length)
        answers = [self._answer_ids(answer) for answer in self.answers]
        return [min(self.max_length, len(p) + len(a)) for p, a in zip(prompts, answers, strict=True)]


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
        labels, scored, start = next_token_labels(ids, mask), None, None
        if "answer_start" in items[0]:  # only the positions that predict an answer's tokens are scored
            start = torch.tensor([item["answer_start"] for item in items])
            scored = answer_positions(start, mask)
            labels = torch.where(scored, labels, IGNORED)
        return TextBatch(
            indices=torch.tensor([item["index"] for item in items]),
            student_ids=ids,
            student_mask=mask,
            student_packing=PackedSequences.from_mask(mask),
            labels=labels,
            student_tokens=int(mask.sum()),
            scored=scored,
            prompt_lengths=start,
            student_lengths=tuple(mask.sum(1).tolist()),
        )

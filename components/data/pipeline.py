"""Tokenise both sides and align them inside loader workers; the training step only gathers."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch.utils.data import Dataset

from components.alignment import CrossTokenizerAligner, collate_alignments, token_view
from components.alignment.batch import BatchAlignment
from components.alignment.views import TokenView
from components.cache.reader import CachedTeacher
from components.data.answer_texts import answer_text, joined
from components.packed_sequences import PackedSequences


class MovableBatch:
    """A dataclass batch whose tensors (and tensor-holding fields) move to a device together."""

    def _map(self, move):
        values = {}
        for item in fields(self):  # type: ignore[arg-type]
            value = getattr(self, item.name)
            movable = isinstance(value, (torch.Tensor, BatchAlignment, PackedSequences))
            values[item.name] = move(value) if movable else value
        return type(self)(**values)

    def to(self, device: torch.device):
        return self._map(lambda value: value.to(device, non_blocking=True))

    def pin_memory(self):
        """Called by DataLoader(pin_memory=True) so host-to-GPU copies overlap compute."""
        return self._map(lambda value: value.pin_memory())


@dataclass
class DistillBatch(MovableBatch):
    """One padded batch; masks are boolean with True for real tokens."""

    indices: torch.Tensor
    student_ids: torch.Tensor
    student_mask: torch.Tensor
    student_packing: PackedSequences  # the student side packed (used when the model runs packed sequences)
    teacher_ids: torch.Tensor
    teacher_mask: torch.Tensor
    teacher_hidden: torch.Tensor | None
    alignment: BatchAlignment
    student_tokens: int
    teacher_tokens: int
    teacher_packing: PackedSequences | None = None  # the teacher side packed (a causal LM teacher runs online)
    scored: torch.Tensor | None = None  # over the student's real tokens: those predicting an answer's token
    answer_starts: torch.Tensor | None = None  # per row, the student's first answer token (None: no answers)


def predicting_matches(batch: DistillBatch) -> torch.Tensor:
    """Over the batch's matched pairs: those whose tokens both have a position before them, which predicts them
    (a text's first token has none), and that lie in the answer when the texts end in written answers."""
    a = batch.alignment
    kept = (a.matched_s > 0) & (a.matched_t > 0)
    if batch.answer_starts is not None:
        kept &= a.matched_s >= batch.answer_starts[a.matched_b]
    return kept


class PromptPairs(Dataset):
    """Prompt i -> student ids, teacher ids, their alignment and (when cached) the teacher's hidden states.

    With `answers` (the teacher's, written once) both sides read prompt i and answer i as one text, and
    `answer_start` says where the student's tokens of the answer begin."""

    def __init__(
        self,
        prompts: list[str],
        student_tokenizer,
        teacher_tokenizer,
        aligner: CrossTokenizerAligner,
        student_max_length: int,
        teacher_max_length: int,
        cache: CachedTeacher | None = None,
        answers: list[str] | None = None,
    ) -> None:
        self.prompts = prompts
        self.student_tokenizer = student_tokenizer
        self.teacher_tokenizer = teacher_tokenizer
        self.aligner = aligner
        self.student_max_length = student_max_length
        self.teacher_max_length = teacher_max_length
        self.cache = cache
        self.answers = answers

    def __len__(self) -> int:
        return len(self.prompts)

    def token_lengths(self) -> list[int]:
        """Student tokens of each text, for batching by length (one tokenizer call for all); with answers, at
        most one more than a text has (its end-of-text), never fewer."""
        length = self.student_max_length
        if self.answers is None:
            tokenized = self.student_tokenizer(self.prompts, truncation=True, max_length=length)
            return [len(ids) for ids in tokenized["input_ids"]]
        texts = [joined(prompt, answer)[0] for prompt, answer in zip(self.prompts, self.answers, strict=True)]
        tokenized = self.student_tokenizer(texts, truncation=True, max_length=length)
        return [min(length, len(ids) + 1) for ids in tokenized["input_ids"]]

    def __getitem__(self, index: int) -> dict:
        if self.answers is not None:
            return self.answered(index, self.answers[index])
        text = self.prompts[index]
        return self._item(index, text, token_view(self.student_tokenizer, text, self.student_max_length))

    def answered(self, index: int, answer: str, ended: bool = True, spaced: bool = True) -> dict:
        """Prompt `index` followed by `answer` (the teacher's, or the student's sample when on-policy), read by
        both sides; `ended`: whether the answer ends there (an end-of-text follows it); `spaced`: as
        `answer_texts.joined` takes it."""
        teacher_side = (self.teacher_tokenizer, self.teacher_max_length)  # reads the same text, answer whole
        written = answer_text(
            self.prompts[index], answer, self.student_tokenizer, self.student_max_length, teacher_side, ended, spaced
        )
        return self._item(index, written.text, written.student) | {"answer_start": written.answer_token}

    def prompt_ids(self, index: int, room: int) -> list[int]:
        """The student's tokens of prompt `index`, its end cut so that `room` tokens can follow it on both
        sides: what the student continues when it writes the answer itself."""
        written = answer_text(
            self.prompts[index], "", self.student_tokenizer, self.student_max_length - room,
            (self.teacher_tokenizer, self.teacher_max_length - room),
        )  # fmt: skip
        return written.student.ids[: written.answer_token].tolist()

    def _item(self, index: int, text: str, student: TokenView) -> dict:
        teacher = token_view(self.teacher_tokenizer, text, self.teacher_max_length)
        item = {
            "index": index,
            "student_ids": student.ids,
            "teacher_ids": teacher.ids,
            "alignment": self.aligner.align(text, student, teacher),
        }
        if self.cache is not None:
            item["teacher_hidden"] = self.cache[index]
        return item


def answer_positions(starts: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Over the real tokens of right-padded rows: those whose next token is in the row's answer (from token
    `starts[row]` to the row's end)."""
    columns = torch.arange(mask.shape[1], device=mask.device)[None]
    return ((columns >= starts[:, None] - 1) & (columns <= mask.sum(1)[:, None] - 2))[mask]


def pad_rows(rows: list, width: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for row, values in enumerate(rows):
        ids[row, : len(values)] = torch.as_tensor(values, dtype=torch.long)
        mask[row, : len(values)] = True
    return ids, mask


class Collator:
    """Pads to the longest prompt of the batch (plus one teacher position when Chroma keeps a pad visible)."""

    def __init__(self, student_pad_id: int, teacher_pad_id: int, teacher_extra_pad: bool) -> None:
        self.student_pad_id = student_pad_id
        self.teacher_pad_id = teacher_pad_id
        self.teacher_extra_pad = teacher_extra_pad

    def __call__(self, items: list[dict]) -> DistillBatch:
        s_width = max(len(item["student_ids"]) for item in items)
        t_width = max(len(item["teacher_ids"]) for item in items) + int(self.teacher_extra_pad)
        student_ids, student_mask = pad_rows([item["student_ids"] for item in items], s_width, self.student_pad_id)
        teacher_ids, teacher_mask = pad_rows([item["teacher_ids"] for item in items], t_width, self.teacher_pad_id)
        hidden = None
        if "teacher_hidden" in items[0]:
            dim = items[0]["teacher_hidden"].shape[-1]
            # Only the padding is zeroed: the rows are overwritten anyway, and batches are mostly rows.
            hidden = torch.empty((len(items), t_width, dim), dtype=items[0]["teacher_hidden"].dtype)
            for row, item in enumerate(items):
                kept = item["teacher_hidden"].shape[0]
                hidden[row, :kept] = item["teacher_hidden"]
                hidden[row, kept:] = 0
        starts = torch.tensor([item["answer_start"] for item in items]) if "answer_start" in items[0] else None
        return DistillBatch(
            indices=torch.tensor([item["index"] for item in items]),
            student_ids=student_ids,
            student_mask=student_mask,
            student_packing=PackedSequences.from_mask(student_mask),
            teacher_ids=teacher_ids,
            teacher_mask=teacher_mask,
            teacher_hidden=hidden,
            alignment=collate_alignments([item["alignment"] for item in items]),
            student_tokens=int(student_mask.sum()),
            teacher_tokens=int(teacher_mask.sum()),
            teacher_packing=PackedSequences.from_mask(teacher_mask) if hidden is None else None,
            scored=answer_positions(starts, student_mask) if starts is not None else None,
            answer_starts=starts,
        )

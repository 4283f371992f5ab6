"""Which tokens two vocabularies share, so that next-token distributions of two tokenizers can be compared
id by id (vocabulary mapping), beside the ULD loss that compares only their sorted shapes.

Two tokens are the same token when appending either to the same text adds the same characters: " the" after
"a" in both tokenizers, whatever their marks for a leading space are (SentencePiece's `▁`, byte-level BPE's `Ġ`,
WordPiece's `##` on continuations). The tokenizers' own decoders say so, which reads every scheme alike. Special
tokens, byte pieces that are not whole characters (decoded as U+FFFD) and tokens adding nothing are left out,
and where several ids of one side read the same, one is used (the one the tokenizer writes), so that the map is
one-to-one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

REPLACEMENT = "\ufffd"  # what a decoder gives for bytes that are not a whole character
BYTE_PIECE = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # SentencePiece's byte fallback: `<0x2E>` decodes as "."


def _prefix(tokenizer) -> list[int]:
    """One ordinary token to decode after, so that a leading space is kept rather than stripped as at the start
    of a text (empty only for a tokenizer that encodes none of these)."""
    for text in ("a", "x", "the", "0"):
        ids = tokenizer.encode(text, add_special_tokens=False)
        if ids:
            return ids[-1:]
    return []


def token_texts(tokenizer) -> dict[str, int]:
    """Text each id adds after a plain prefix -> the id that adds it (mappable ids only): the lowest, and a
    byte-fallback piece only for text no real piece adds (Llama-2's `<0x2E>` reads "." as its `.` does, but the
    tokenizer writes `.`; it keeps `<0x0A>` for a newline, having no piece for it)."""
    prefix = _prefix(tokenizer)
    start = tokenizer.decode(prefix, clean_up_tokenization_spaces=False)
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    ids = [i for i in range(len(tokenizer)) if i not in special]
    ids.sort(key=lambda i: (isinstance(pieces[i], str) and BYTE_PIECE.fullmatch(pieces[i]) is not None, i))
    decoded = tokenizer.batch_decode([prefix + [i] for i in ids], clean_up_tokenization_spaces=False)
    texts: dict[str, int] = {}
    for i, text in zip(ids, decoded, strict=True):
        if not text.startswith(start):
            continue
        added = text[len(start) :]
        if added and REPLACEMENT not in added:
            texts.setdefault(added, i)
    return texts


@dataclass(frozen=True)
class VocabMap:
    """Paired ids of the tokens both vocabularies share: student_ids[k] and teacher_ids[k] read the same."""

    student_ids: torch.Tensor
    teacher_ids: torch.Tensor
    student_size: int
    teacher_size: int

    @property
    def shared(self) -> int:
        return int(self.student_ids.numel())

    def to(self, device: torch.device) -> VocabMap:
        return VocabMap(self.student_ids.to(device), self.teacher_ids.to(device), self.student_size, self.teacher_size)

    def summary(self) -> str:
        return (
            f"{self.shared} tokens shared: {self.shared / self.teacher_size:.1%} of the teacher's "
            f"{self.teacher_size}, {self.shared / self.student_size:.1%} of the student's {self.student_size}"
        )


def build_vocab_map(student_tokenizer, teacher_tokenizer) -> VocabMap:
    student, teacher = token_texts(student_tokenizer), token_texts(teacher_tokenizer)
    common = sorted(set(student) & set(teacher), key=lambda text: teacher[text])
    return VocabMap(
        torch.tensor([student[text] for text in common], dtype=torch.long),
        torch.tensor([teacher[text] for text in common], dtype=torch.long),
        len(student_tokenizer),
        len(teacher_tokenizer),
    )


def mapped_log_probs(log_probs: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """[rows, shared + 1]: the log-probabilities of the shared ids, then of every other id together (one
    bucket), so that each row is still a whole distribution and mass on unshared tokens is compared too."""
    shared = log_probs.index_select(-1, ids)
    rest = log_probs.index_fill(-1, ids, float("-inf")).logsumexp(-1, keepdim=True)
    rest = rest.clamp(min=-1e30)  # every id shared: an empty bucket, whose -inf would turn 0 * inf into nan
    return torch.cat([shared, rest], -1)

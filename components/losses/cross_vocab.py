"""Logit distillation across two vocabularies: the Universal Logit Distillation loss (Boizard et al., 2024).

Two tokenizers give no shared index to compare probabilities at, but a distribution's sorted probabilities do
not depend on which token has which id: ULD takes the L1 distance between both sorted probability vectors
(the shorter padded with zeros), which is the Wasserstein-1 distance under a uniform cost between tokens. It is
taken at pairs of positions that have read the same text: those just before two tokens the cross-tokenizer
aligner matched (same text, same place in the same word), where both models predict what follows one prefix.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from components.losses.logit_losses import CHUNK_ELEMENTS, IGNORED, chunked_sums
from schemas.stages import CrossEntropyLoss, LogitLoss, ULDLoss


def _uld_sum(temperature: float, vocabs: tuple[int, int], student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    s = F.softmax(student[:, : vocabs[0]].float() / temperature, -1).sort(-1, descending=True).values
    t = F.softmax(teacher[:, : vocabs[1]].float() / temperature, -1).sort(-1, descending=True).values
    width = max(s.shape[1], t.shape[1])
    s, t = F.pad(s, (0, width - s.shape[1])), F.pad(t, (0, width - t.shape[1]))
    return (s - t).abs().sum()


def _cross_entropy_sum(vocab: int, student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(student[:, :vocab].float(), labels, ignore_index=IGNORED, reduction="sum")


def row_index(mask: torch.Tensor, sample: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Where token `position` of row `sample` sits among `mask`'s real tokens taken in order (right-padded rows)."""
    lengths = mask.sum(1)
    starts = lengths.cumsum(0) - lengths
    return starts[sample] + position


class CrossVocabLoss:
    """Sum of `weight * mean term` over `uld` (per aligned position pair) and `cross_entropy` (per student token
    with a next one). `vocabs`: the student's and the teacher's tokenizer sizes."""

    def __init__(self, losses: list[LogitLoss], vocabs: tuple[int, int]) -> None:
        self.losses = tuple(losses)
        self.vocabs = vocabs

    def sums_and_counts(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor,
        pairs: tuple[torch.Tensor, torch.Tensor],
        labels: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-loss sums and what each is averaged over. student, teacher: logits of each side's real tokens;
        pairs: row indices into both, of the positions compared; labels: the student rows' next tokens."""
        sums, counts = [], []
        s_rows, t_rows = student[pairs[0]], teacher[pairs[1]]
        for loss in self.losses:
            if isinstance(loss, ULDLoss):
                if s_rows.shape[0]:
                    rows = max(1, CHUNK_ELEMENTS // max(self.vocabs))
                    sums.append(chunked_sums(partial(_uld_sum, loss.temperature, self.vocabs), rows, s_rows, t_rows))
                else:  # a batch with no aligned pair contributes nothing (but keeps the graph)
                    sums.append(student.sum() * 0)
                counts.append(float(s_rows.shape[0]))
            else:
                assert isinstance(loss, CrossEntropyLoss)  # over every student row, chunked like the others
                rows = max(1, CHUNK_ELEMENTS // self.vocabs[0])
                sums.append(chunked_sums(partial(_cross_entropy_sum, self.vocabs[0]), rows, student, labels))
                counts.append((labels != IGNORED).sum().float())
        count = torch.stack([torch.as_tensor(c, dtype=torch.float32, device=student.device) for c in counts])
        return torch.stack(sums), count

    def total(self, sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """The stage loss from per-loss sums and counts (of one batch, or of a whole evaluation)."""
        weights = torch.tensor([loss.weight for loss in self.losses], device=sums.device)
        return (sums / counts.clamp(min=1.0) * weights).sum()

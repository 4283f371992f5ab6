"""Logit distillation across two vocabularies: the Universal Logit Distillation loss (Boizard et al., 2024), and
the divergences of the logits family over the tokens both vocabularies share (vocabulary mapping).

Two tokenizers give no common index for all their tokens, but a distribution's sorted probabilities do not
depend on which token has which id: ULD takes the L1 distance between both sorted probability vectors (the
shorter padded with zeros), which is the Wasserstein-1 distance under a uniform cost between tokens. The mapped
divergences instead compare the probabilities of the tokens both vocabularies share, id by id, with all other
tokens as one bucket. Both are taken at pairs of positions that have read the same text: those just before two
tokens the cross-tokenizer aligner matched (same text, same place in the same word), where both models predict
what follows one prefix.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from components.losses.logit_losses import CHUNK_ELEMENTS, IGNORED, chunked_sums, divergence_of, softened
from components.losses.vocab_map import VocabMap, mapped_log_probs
from schemas.stages import DIVERGENCE_LOSSES, CrossEntropyLoss, LogitLoss, ULDLoss


def _uld_sum(temperature: float, vocabs: tuple[int, int], student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    s = F.softmax(student[:, : vocabs[0]].float() / temperature, -1).sort(-1, descending=True).values
    t = F.softmax(teacher[:, : vocabs[1]].float() / temperature, -1).sort(-1, descending=True).values
    width = max(s.shape[1], t.shape[1])
    s, t = F.pad(s, (0, width - s.shape[1])), F.pad(t, (0, width - t.shape[1]))
    return (s - t).abs().sum()


def _mapped_sum(loss: LogitLoss, vocab_map: VocabMap, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    s_log, t_log = softened(
        loss, student[:, : vocab_map.student_size].float(), teacher[:, : vocab_map.teacher_size].float()
    )
    s_map = mapped_log_probs(s_log, vocab_map.student_ids)
    t_map = mapped_log_probs(t_log, vocab_map.teacher_ids)
    return divergence_of(loss, s_map, t_map).sum()


def _cross_entropy_sum(vocab: int, student: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(student[:, :vocab].float(), labels, ignore_index=IGNORED, reduction="sum")


def row_index(mask: torch.Tensor, sample: torch.Tensor, position: torch.Tensor) -> torch.Tensor:
    """Where token `position` of row `sample` sits among `mask`'s real tokens taken in order (right-padded rows)."""
    lengths = mask.sum(1)
    starts = lengths.cumsum(0) - lengths
    return starts[sample] + position


class CrossVocabLoss:
    """Sum of `weight * mean term` over `uld` and the mapped divergences (per aligned position pair) and
    `cross_entropy` (per student token with a next one). `vocabs`: the student's and the teacher's tokenizer
    sizes; `vocab_map` (on the logits' device) pairs the ids both share, for the divergences."""

    def __init__(self, losses: list[LogitLoss], vocabs: tuple[int, int], vocab_map: VocabMap | None = None) -> None:
        self.losses = tuple(losses)
        self.vocabs = vocabs
        self.vocab_map = vocab_map
        if any(isinstance(loss, DIVERGENCE_LOSSES) for loss in self.losses):
            assert vocab_map is not None, "divergences across two vocabularies compare the ids both share"

    def _pair_sum(self, loss: LogitLoss, s_rows: torch.Tensor, t_rows: torch.Tensor) -> torch.Tensor:
        if not s_rows.shape[0]:  # a batch with no aligned pair contributes nothing (but keeps the graph)
            return s_rows.sum() * 0
        rows = max(1, CHUNK_ELEMENTS // max(self.vocabs))
        if isinstance(loss, ULDLoss):
            return chunked_sums(partial(_uld_sum, loss.temperature, self.vocabs), rows, s_rows, t_rows)
        return chunked_sums(partial(_mapped_sum, loss, self.vocab_map), rows, s_rows, t_rows)

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
            if isinstance(loss, (ULDLoss, *DIVERGENCE_LOSSES)):
                sums.append(self._pair_sum(loss, s_rows, t_rows))
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

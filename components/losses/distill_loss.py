"""The stage loss: a weighted sum of pair losses over alignment tiers, with no host sync in the step."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from components.alignment.batch import BatchAlignment, sequence_vectors, tier_vectors, window_accept
from components.losses.logit_losses import numbered
from components.losses.vector_losses import pair_loss_of
from components.models.compilation import allow_run_variants
from schemas.alignment import CrossTokenizerAlignment
from schemas.stages import Loss


@dataclass
class TierPairs:
    """Aligned vectors of one tier; `weight` is 1 for a used pair and 0 for a rejected window candidate."""

    student: torch.Tensor
    teacher: torch.Tensor
    weight: torch.Tensor


def tier_pairs(
    tier: str,
    student_out: torch.Tensor,
    teacher_out: torch.Tensor,
    alignment: BatchAlignment,
    spec: CrossTokenizerAlignment,
) -> TierPairs:
    """Vectors compared by one tier, in float32 so that the distances are not rounded away (the tier's rows are
    widened once gathered, which converts a fraction of what widening whole bf16 batches for every tier did)."""
    if tier == "sequence":
        s, t, both = sequence_vectors(student_out, teacher_out, alignment)
        return TierPairs(s, t, both.to(s.dtype))
    s, t = tier_vectors(student_out, teacher_out, alignment, tier)
    if tier == "window":
        weight = window_accept(s.detach(), t, spec.min_cosine).to(s.dtype)
    else:
        weight = torch.ones(s.shape[0], device=s.device, dtype=s.dtype)
    return TierPairs(s, t, weight)


class DistillLoss:
    """Sum of `weight * mean pair loss` over the stage's loss terms; empty tiers contribute zero.

    `compiled`: `training_loss` runs as one torch.compile graph with dynamic shapes (pair counts change every
    batch). Eager, the gathers, distances and their backward are some 70 kernels each reading or writing a
    batch-sized float32 tensor; compiled, they fuse into a few."""

    def __init__(self, losses: list[Loss], alignment: CrossTokenizerAlignment, compiled: bool = False) -> None:
        self.losses = losses
        self.alignment = alignment
        self.tiers = sorted({loss.on for loss in losses})
        self.pair_losses = [pair_loss_of(loss) for loss in losses]
        self._training_loss = None
        if compiled:  # each stage's loss is another variant of the same code: see models.compilation
            allow_run_variants()
            self._training_loss = torch.compile(self._eager_training_loss, dynamic=True)

    def training_loss(self, student_out, teacher_out, alignment) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The loss of one training batch: every tier's pairs, then the weighted sum (see `__call__`)."""
        compute = self._training_loss or self._eager_training_loss
        return compute(student_out, teacher_out, alignment)

    def _eager_training_loss(self, student_out, teacher_out, alignment):
        return self(self.pairs(student_out, teacher_out, alignment))

    def term_names(self) -> list[str]:
        """`tier/type` per loss, numbered where a stage has two of one type on one tier."""
        return numbered([f"{loss.on}/{loss.type}" for loss in self.losses])

    def pairs(self, student_out, teacher_out, alignment) -> dict[str, TierPairs]:
        return {tier: tier_pairs(tier, student_out, teacher_out, alignment, self.alignment) for tier in self.tiers}

    def __call__(self, pairs: dict[str, TierPairs]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and each term (detached tensors: reading them is left to the logging cadence)."""
        total = None
        terms: dict[str, torch.Tensor] = {}
        for index, (loss, name) in enumerate(zip(self.losses, self.term_names(), strict=True)):
            tier = pairs[loss.on]
            values = self.pair_losses[index](loss, tier.student, tier.teacher)
            term = (values * tier.weight).sum() / tier.weight.sum().clamp(min=1.0)
            terms[name] = term.detach()
            total = loss.weight * term if total is None else total + loss.weight * term
        assert total is not None
        return total, terms

"""Held-out metrics: each stage term as trained, per-tier Huber and cosine (the same yardstick whatever the stage
trains with), and the mean aligned cosine similarity."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from components.data.pipeline import DistillBatch
from components.losses import DistillLoss
from components.losses.distill_loss import TierPairs

ALIGNED_TIERS = ("matched", "split", "window")


def _accumulate(sums: dict[str, torch.Tensor], key: str, value: torch.Tensor) -> None:
    sums[key] = sums[key] + value if key in sums else value


@torch.no_grad()
def evaluate(
    student_forward: Callable[[DistillBatch], torch.Tensor],
    teacher_forward: Callable[[DistillBatch], torch.Tensor],
    batches: Iterable[DistillBatch],
    loss: DistillLoss,
    all_tiers: list[str],
    total: Callable[[torch.Tensor], torch.Tensor] = lambda sums: sums,
) -> dict[str, float]:
    """Sums stay on the device until the end: one host sync per evaluation, not per batch. `total` adds the
    sums of every process (each evaluates its share of the batches); the metrics are then those of one process
    evaluating them all."""
    sums: dict[str, torch.Tensor] = {}
    measure = DistillLoss([], loss.alignment)
    measure.tiers = list(all_tiers)
    for batch in batches:
        out, teacher = student_forward(batch), teacher_forward(batch)  # the tiers widen their rows to float32
        pairs = measure.pairs(out, teacher, batch.alignment)
        batch_loss, terms = loss({tier: pairs[tier] for tier in loss.tiers})
        _accumulate(sums, "loss", batch_loss)
        for name, term in terms.items():
            _accumulate(sums, f"terms/{name}", term)
        _accumulate(sums, "batches", torch.ones((), device=batch_loss.device))
        for tier, tier_pairs in pairs.items():
            _add_tier(sums, tier, tier_pairs)
    # The same keys in the same order in every process, whatever its batches held (or none at all).
    term_keys = [f"terms/{name}" for name in loss.term_names()]
    keys = ["loss", "batches", *term_keys]
    keys += [f"{tier}/{kind}" for tier in all_tiers for kind in ("huber", "cos", "count")]
    device = next(iter(sums.values())).device if sums else None
    local = torch.stack([sums[key].float() if key in sums else torch.zeros((), device=device) for key in keys])
    values = dict(zip(keys, total(local).tolist(), strict=True))
    if not values["batches"]:
        return {}
    metrics = {"eval/loss": values["loss"] / values["batches"]}
    metrics |= {f"eval/{key}": values[key] / values["batches"] for key in term_keys}  # like eval/loss
    for tier in all_tiers:
        count = values[f"{tier}/count"]
        metrics[f"eval/{tier}/pairs"] = count  # 0: a loss on this tier compares nothing (its term reads 0)
        if count:
            metrics[f"eval/{tier}/huber"] = values[f"{tier}/huber"] / count
            metrics[f"eval/{tier}/cosine_sim"] = values[f"{tier}/cos"] / count
    aligned_tiers = [tier for tier in ALIGNED_TIERS if tier in all_tiers]
    aligned = sum(values[f"{tier}/count"] for tier in aligned_tiers)
    if aligned:
        metrics["eval/aligned_cosine"] = sum(values[f"{tier}/cos"] for tier in aligned_tiers) / aligned
    return metrics


def _add_tier(sums: dict[str, torch.Tensor], tier: str, pairs: TierPairs) -> None:
    weight = pairs.weight
    huber = F.huber_loss(pairs.student, pairs.teacher, reduction="none", delta=1.0).mean(-1)
    cos = F.cosine_similarity(pairs.student, pairs.teacher, dim=-1, eps=1e-6)
    _accumulate(sums, f"{tier}/huber", (huber * weight).sum())
    _accumulate(sums, f"{tier}/cos", (cos * weight).sum())
    _accumulate(sums, f"{tier}/count", weight.sum())


def empty_tier_warnings(stage_index: int, stage, metrics: dict[str, float]) -> list[str]:
    """A weighted loss whose tier found no pairs in the whole eval set trains nothing, and its term reads 0 as if
    it fitted perfectly: said once, at the stage's first evaluation (an embedding stage's metrics carry the
    pair counts; others have none)."""
    lines = []
    for index, loss in enumerate(stage.losses):
        if loss.weight and metrics.get(f"eval/{getattr(loss, 'on', None)}/pairs") == 0:
            lines.append(
                f"warning: stages[{stage_index}].losses[{index}] ({loss.type} on {loss.on}): the {loss.on} tier found "
                "no pairs in the eval prompts, so this loss compares nothing (its term logs 0); `recipe align-report` "
                "shows each tier's coverage"
            )
    return lines

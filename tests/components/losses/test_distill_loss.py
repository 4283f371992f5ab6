"""The stage loss: its weighted sum, empty tiers, and the compiled graph against eager maths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from components.alignment import SampleAlignment
from components.alignment.batch import collate_alignments
from components.losses import DistillLoss
from components.models.compilation import compiled_graphs
from schemas.alignment import CrossTokenizerAlignment
from schemas.stages import CosineLoss, HuberLoss

LOSSES = [
    HuberLoss(type="huber", on="matched", weight=1.0, delta=1.0),
    CosineLoss(type="cosine", on="matched", weight=0.1),
    HuberLoss(type="huber", on="split", weight=0.5, delta=1.0),
    CosineLoss(type="cosine", on="window", weight=0.2),
    HuberLoss(type="huber", on="sequence", weight=0.1, delta=1.0),
]
ALIGNMENT = CrossTokenizerAlignment(type="cross_tokenizer", min_cosine=0.0)
WIDTH = 16


def _batch(lengths: list[int], seed: int, windows: bool = True):
    """Outputs and an alignment in the trainer's layout: 3 of 4 tokens matched, the 4th split, every 3rd a window."""
    rng = np.random.default_rng(seed)
    samples = []
    for n in lengths:
        positions = np.arange(n)
        split = positions[positions % 4 == 3]
        window = positions[positions % 3 == 0] if windows else positions[:0]
        samples.append(
            SampleAlignment(
                matched_s=positions[positions % 4 != 3],
                matched_t=positions[positions % 4 != 3],
                split_s=split,
                split_s_group=np.arange(len(split)) // 2,
                split_t=split,
                split_t_group=np.arange(len(split)) // 2,
                window_s=window,
                window_t=np.minimum(window + 1, n - 1),
                sequence_s=positions,
                sequence_t=positions,
            )
        )
    longest = max(lengths)
    mask = torch.arange(longest)[None] < torch.tensor(lengths)[:, None]
    student = torch.from_numpy(rng.standard_normal((len(lengths), longest, WIDTH), dtype=np.float32))
    teacher = torch.from_numpy(rng.standard_normal((len(lengths), longest, WIDTH), dtype=np.float32))
    return student, mask, teacher.to(torch.bfloat16), mask, collate_alignments(samples)


def _loss_and_grad(loss_fn: DistillLoss, batch) -> tuple[torch.Tensor, dict, torch.Tensor]:
    student, _, teacher, _, alignment = batch
    student = student.clone().requires_grad_()
    total, terms = loss_fn.training_loss(student, teacher, alignment)
    total.backward()
    return total.detach(), terms, student.grad


def test_the_total_is_the_weighted_sum_of_mean_pair_losses() -> None:
    student, mask, teacher, _, alignment = _batch([5, 8], seed=0)
    total, terms = DistillLoss(LOSSES[:2], ALIGNMENT).training_loss(student, teacher, alignment)
    matched = [position % 4 != 3 for n in (5, 8) for position in range(n)]
    s, t = student[mask][matched], teacher.float()[mask][matched]
    huber = F.huber_loss(s, t, delta=1.0)
    cosine = (1 - F.cosine_similarity(s, t, dim=-1, eps=1e-6)).mean()
    torch.testing.assert_close(terms["matched/huber"], huber)
    torch.testing.assert_close(total, huber + 0.1 * cosine)


def test_an_empty_tier_adds_zero_instead_of_nan() -> None:
    student, mask, teacher, _, alignment = _batch([5, 8], seed=1, windows=False)
    total, terms = DistillLoss(LOSSES, ALIGNMENT).training_loss(student, teacher, alignment)
    assert terms["window/cosine"] == 0 and torch.isfinite(total)


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")),
]


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_the_compiled_loss_matches_eager_over_changing_shapes_without_a_graph_per_batch(device) -> None:
    eager, compiled = DistillLoss(LOSSES, ALIGNMENT), DistillLoss(LOSSES, ALIGNMENT, compiled=True)
    shapes = [[5, 8], [7, 3, 9], [12, 6], [4, 11, 6, 2], [9, 9], [3, 14, 5]]  # no batch of one: another graph
    before = compiled_graphs()
    for seed, lengths in enumerate(shapes):
        student, mask, teacher, _, alignment = _batch(lengths, seed)
        batch = (student.to(device), mask.to(device), teacher.to(device), mask.to(device), alignment.to(device))
        want_total, want_terms, want_grad = _loss_and_grad(eager, batch)
        total, terms, grad = _loss_and_grad(compiled, batch)
        torch.testing.assert_close(total, want_total, rtol=1e-5, atol=1e-6)
        assert terms.keys() == want_terms.keys()
        for name, value in want_terms.items():
            torch.testing.assert_close(terms[name], value, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(grad, want_grad, rtol=1e-5, atol=1e-7)
    # Compiled with dynamic sizes from the first batch: every later batch reuses its graph.
    assert compiled_graphs() - before == 1


def test_two_losses_of_one_type_on_one_tier_are_logged_apart() -> None:
    """The second overwrote the first in eval/terms: the logs showed half the loss."""
    losses = [HuberLoss(type="huber", on="matched", weight=1.0), HuberLoss(type="huber", on="matched", delta=0.1)]
    student, _, teacher, _, alignment = _batch([5, 8], seed=2)
    total, terms = DistillLoss(losses, ALIGNMENT).training_loss(student, teacher, alignment)
    assert sorted(terms) == ["matched/huber_0", "matched/huber_1"]
    torch.testing.assert_close(total, terms["matched/huber_0"] + terms["matched/huber_1"])

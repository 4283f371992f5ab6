"""Collation into batch index tensors and the per-tier gathers done on the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from components.alignment.batch import (
    BatchAlignment,
    collate_alignments,
    sequence_vectors,
    tier_vectors,
    window_accept,
)
from components.alignment.cross_tokenizer import SampleAlignment


def ints(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


@pytest.fixture
def two_samples() -> list[SampleAlignment]:
    first = SampleAlignment(
        matched_s=ints(0, 2),
        matched_t=ints(0, 3),
        split_s=ints(1, 3),
        split_s_group=ints(0, 1),
        split_t=ints(1, 2, 4),
        split_t_group=ints(0, 0, 1),
        window_s=ints(4),
        window_t=ints(5),
        sequence_s=ints(0, 1, 2, 3),
        sequence_t=ints(0, 1, 2, 3, 4, 5),
    )
    second = SampleAlignment(
        matched_s=ints(1),
        matched_t=ints(2),
        split_s=ints(0, 2, 3),
        split_s_group=ints(0, 0, 1),
        split_t=ints(0, 1),
        split_t_group=ints(0, 1),
        sequence_s=ints(0, 1, 2, 3, 4),
        sequence_t=ints(0, 1, 2),
    )
    return [first, second]


def test_collate_adds_batch_index_and_makes_groups_unique(two_samples):
    batch = collate_alignments(two_samples)
    assert batch.matched_b.tolist() == [0, 0, 1]
    assert batch.matched_s.tolist() == [0, 2, 1]
    assert batch.matched_t.tolist() == [0, 3, 2]
    assert batch.split_s_b.tolist() == [0, 0, 1, 1, 1]
    assert batch.split_s_pos.tolist() == [1, 3, 0, 2, 3]
    assert batch.split_s_group.tolist() == [0, 1, 2, 2, 3]
    assert batch.split_t_b.tolist() == [0, 0, 0, 1, 1]
    assert batch.split_t_pos.tolist() == [1, 2, 4, 0, 1]
    assert batch.split_t_group.tolist() == [0, 0, 1, 2, 3]
    assert batch.n_split_groups == 4
    assert batch.window_b.tolist() == [0] and batch.window_s.tolist() == [4] and batch.window_t.tolist() == [5]
    assert all(t.dtype == torch.long for t in (batch.matched_b, batch.split_t_group, batch.window_t))


def test_tier_vectors_gather_pairs_and_group_means(two_samples):
    batch = collate_alignments(two_samples)
    student_out = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    teacher_out = torch.arange(2 * 6 * 3, dtype=torch.float32).reshape(2, 6, 3) * 10

    s_vecs, t_vecs = tier_vectors(student_out, teacher_out, batch, "matched")
    assert torch.equal(s_vecs, torch.stack([student_out[0, 0], student_out[0, 2], student_out[1, 1]]))
    assert torch.equal(t_vecs, torch.stack([teacher_out[0, 0], teacher_out[0, 3], teacher_out[1, 2]]))

    s_means, t_means = tier_vectors(student_out, teacher_out, batch, "split")
    expected_s = [student_out[0, 1], student_out[0, 3], (student_out[1, 0] + student_out[1, 2]) / 2, student_out[1, 3]]
    expected_t = [(teacher_out[0, 1] + teacher_out[0, 2]) / 2, teacher_out[0, 4], teacher_out[1, 0], teacher_out[1, 1]]
    assert torch.allclose(s_means, torch.stack(expected_s))
    assert torch.allclose(t_means, torch.stack(expected_t))

    s_window, t_window = tier_vectors(student_out, teacher_out, batch, "window")
    assert torch.equal(s_window, student_out[0, 4].unsqueeze(0))
    assert torch.equal(t_window, teacher_out[0, 5].unsqueeze(0))

    with pytest.raises(ValueError, match="sequence_vectors"):
        tier_vectors(student_out, teacher_out, batch, "sequence")


def test_split_means_of_bf16_outputs_are_float32_and_pass_gradients(two_samples):
    batch = collate_alignments(two_samples)
    student_out = torch.randn(2, 5, 4, dtype=torch.bfloat16, requires_grad=True)
    teacher_out = torch.randn(2, 6, 4, dtype=torch.bfloat16)
    s_means, t_means = tier_vectors(student_out, teacher_out, batch, "split")
    assert s_means.dtype == t_means.dtype == torch.float32 and s_means.shape == (4, 4) and t_means.shape == (4, 4)
    s_means.sum().backward()
    assert student_out.grad.dtype == torch.bfloat16
    # Sample 1, positions 0 and 2 share a group of two: each gets half the gradient.
    assert torch.allclose(student_out.grad[1, 0].float(), torch.full((4,), 0.5))
    assert torch.allclose(student_out.grad[0, 1].float(), torch.ones(4))
    assert torch.count_nonzero(student_out.grad[0, 0]) == 0


def test_empty_batch_gives_empty_vectors():
    batch = collate_alignments([SampleAlignment(), SampleAlignment()])
    assert batch.n_split_groups == 0
    student_out, teacher_out = torch.zeros(2, 3, 8), torch.zeros(2, 4, 8)
    for tier in ("matched", "split", "window"):
        s_vecs, t_vecs = tier_vectors(student_out, teacher_out, batch, tier)
        assert s_vecs.shape == (0, 8) and t_vecs.shape == (0, 8)
    assert collate_alignments([]).n_split_groups == 0


def test_to_and_pin_memory_return_batch_alignments(two_samples):
    batch = collate_alignments(two_samples)
    moved = batch.to("cpu")
    assert isinstance(moved, BatchAlignment) and moved.n_split_groups == batch.n_split_groups
    assert torch.equal(moved.split_t_group, batch.split_t_group)
    if torch.cuda.is_available():
        assert batch.to("cuda").matched_s.is_cuda


def test_window_accept_uses_cosine_threshold():
    s_vecs = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    t_vecs = torch.tensor([[2.0, 0.0], [1.0, 1.0], [-1.0, 0.0]])
    accepted = window_accept(s_vecs, t_vecs, 0.7)
    assert accepted.tolist() == [True, True, False]
    assert accepted.dtype == torch.bool and not accepted.requires_grad


def test_sequence_vectors_average_the_tokens_of_the_text_both_sides_read_whole():
    """Not a side's every token: one cut at max_length, or an end-of-text, would make the means of other text."""
    student_out = torch.tensor([[[1.0], [3.0], [100.0]], [[5.0], [0.0], [0.0]]])
    teacher_out = torch.tensor([[[2.0], [4.0], [6.0], [-50.0]], [[7.0], [0.0], [0.0], [0.0]]])
    whole = [SampleAlignment(sequence_s=ints(0, 1), sequence_t=ints(0, 1, 2)), SampleAlignment(sequence_s=ints(0))]
    s_vec, t_vec, both = sequence_vectors(student_out, teacher_out, collate_alignments(whole))
    assert s_vec.tolist() == [[2.0], [5.0]] and t_vec.tolist() == [[4.0], [0.0]]
    assert both.tolist() == [True, False]  # a text with no teacher tokens left is no pair


@pytest.mark.parametrize("tier", ["matched", "split", "window", "sequence"])
def test_bf16_outputs_give_the_float32_vectors_of_their_widened_copies(two_samples, tier):
    """Gathering before widening changes which tensor is converted, not the vectors or their gradients."""
    batch = collate_alignments(two_samples)
    torch.manual_seed(0)
    student_out = torch.randn(2, 5, 8).to(torch.bfloat16).requires_grad_()
    teacher_out = torch.randn(2, 6, 8).to(torch.bfloat16)

    def vectors(student, teacher):
        if tier == "sequence":
            return sequence_vectors(student, teacher, batch)[:2]
        return tier_vectors(student, teacher, batch, tier)

    s_vecs, t_vecs = vectors(student_out, teacher_out)
    widened = student_out.detach().float().requires_grad_()
    s_wide, t_wide = vectors(widened, teacher_out.float())
    assert s_vecs.dtype == t_vecs.dtype == torch.float32
    torch.testing.assert_close(s_vecs, s_wide, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(t_vecs, t_wide, rtol=1e-6, atol=1e-6)
    s_vecs.pow(2).sum().backward()
    s_wide.pow(2).sum().backward()
    torch.testing.assert_close(student_out.grad, widened.grad.to(torch.bfloat16))

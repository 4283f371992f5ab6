"""The logit terms against their textbook definitions, chunked or not, on the tokenizer's rows only."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from components.losses import logit_losses
from components.losses.logit_losses import IGNORED, LogitDistillLoss
from schemas.stages import CrossEntropyLoss, ForwardKLLoss, JSDLoss, ReverseKLLoss

VOCAB = 50


def _logits(seed: int, rows: int = 12, width: int = VOCAB) -> torch.Tensor:
    return torch.randn(rows, width, generator=torch.Generator().manual_seed(seed)) * 3


def _labels(rows: int = 12) -> torch.Tensor:
    labels = torch.arange(rows) % VOCAB
    labels[-1] = IGNORED  # the text's last token has no next one
    return labels


def test_forward_and_reverse_kl_are_the_textbook_divergences_times_t_squared() -> None:
    student, teacher, t = _logits(0), _logits(1), 2.0
    s_log, t_log = F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1)
    forward = F.kl_div(s_log, t_log, log_target=True, reduction="none").sum(-1).mean() * t * t
    reverse = F.kl_div(t_log, s_log, log_target=True, reduction="none").sum(-1).mean() * t * t
    loss = LogitDistillLoss(
        [ForwardKLLoss(type="forward_kl", temperature=t), ReverseKLLoss(type="reverse_kl", temperature=t)], VOCAB
    )
    total, terms = loss(student, teacher, _labels())
    assert terms["logits/forward_kl"].item() == pytest.approx(forward.item(), rel=1e-5)
    assert terms["logits/reverse_kl"].item() == pytest.approx(reverse.item(), rel=1e-5)
    assert total.item() == pytest.approx(forward.item() + reverse.item(), rel=1e-5)


def test_jsd_is_symmetric_at_one_half_bounded_by_ln2_and_zero_for_equal_distributions() -> None:
    a, b = _logits(2), _logits(3)
    jsd = LogitDistillLoss([JSDLoss(type="jsd", beta=0.5)], VOCAB)
    forward, _ = jsd(a, b, _labels())
    backward, _ = jsd(b, a, _labels())
    assert forward.item() == pytest.approx(backward.item(), rel=1e-5)
    assert 0 < forward.item() <= math.log(2)
    same, _ = jsd(a, a.clone(), _labels())
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_cross_entropy_averages_over_the_tokens_that_have_a_next_one() -> None:
    student, labels = _logits(4), _labels()
    total, _ = LogitDistillLoss([CrossEntropyLoss(type="cross_entropy", weight=0.5)], VOCAB)(
        student, _logits(5), labels
    )
    assert total.item() == pytest.approx(0.5 * F.cross_entropy(student, labels, ignore_index=IGNORED).item(), rel=1e-5)


def test_no_rows_give_a_zero_loss_with_a_gradient_of_zeros() -> None:
    """A denoised batch of one-token texts scores nothing: a zero step, not a crash."""
    student = _logits(6, rows=0).requires_grad_()
    loss = LogitDistillLoss(
        [CrossEntropyLoss(type="cross_entropy"), ForwardKLLoss(type="forward_kl", temperature=2.0)], VOCAB
    )
    total, terms = loss(student, _logits(7, rows=0), torch.zeros(0, dtype=torch.long))
    total.backward()
    assert total.item() == 0.0 and all(term.item() == 0.0 for term in terms.values())
    assert student.grad is not None and student.grad.shape == (0, VOCAB)


def test_rows_past_the_tokenizer_are_no_token_and_are_left_out() -> None:
    """Qwen2.5-7B has 152064 embedding rows for 151665 tokens: padding rows must not enter either softmax."""
    student, teacher = _logits(6), _logits(7)
    padded_s = torch.cat([student, torch.full((12, 14), 30.0)], -1)  # huge logits on rows that are no token
    padded_t = torch.cat([teacher, torch.full((12, 20), -30.0)], -1)  # and a wider teacher
    loss = LogitDistillLoss([ForwardKLLoss(type="forward_kl"), CrossEntropyLoss(type="cross_entropy")], VOCAB)
    plain, _ = loss(student, teacher, _labels())
    padded, _ = loss(padded_s, padded_t, _labels())
    assert padded.item() == pytest.approx(plain.item(), rel=1e-6)


def test_chunks_give_the_same_loss_and_gradient_as_one_pass(monkeypatch) -> None:
    losses = [
        ForwardKLLoss(type="forward_kl", temperature=2.0),
        JSDLoss(type="jsd"),
        CrossEntropyLoss(type="cross_entropy"),
    ]
    teacher = _logits(9)
    grads, values = [], []
    for elements in (VOCAB * 1000, VOCAB * 5):  # one chunk; chunks of 5 rows (the last one shorter)
        monkeypatch.setattr(logit_losses, "CHUNK_ELEMENTS", elements)
        student = _logits(8).requires_grad_(True)
        total, _ = LogitDistillLoss(losses, VOCAB)(student, teacher, _labels())
        total.backward()
        values.append(total.item())
        grads.append(student.grad)
    assert values[0] == pytest.approx(values[1], rel=1e-6)
    torch.testing.assert_close(grads[0], grads[1])


def test_the_student_moves_towards_the_teacher() -> None:
    teacher, student = _logits(10), _logits(11).requires_grad_(True)
    loss = LogitDistillLoss([ForwardKLLoss(type="forward_kl")], VOCAB)
    before, _ = loss(student, teacher, _labels())
    before.backward()
    with torch.no_grad():
        after, _ = loss(student - 10.0 * student.grad, teacher, _labels())
    assert after.item() < before.item()


def test_uld_is_the_l1_distance_of_sorted_probabilities_whatever_the_token_order() -> None:
    from components.losses.cross_vocab import CrossVocabLoss, row_index
    from schemas.stages import ULDLoss

    student, teacher = _logits(12, rows=4, width=30), _logits(13, rows=4, width=50)
    loss = CrossVocabLoss([ULDLoss(type="uld")], (30, 50))
    pairs = (torch.arange(4), torch.arange(4))
    sums, counts = loss.sums_and_counts(student, teacher, pairs, torch.zeros(4, dtype=torch.long))
    s = F.pad(F.softmax(student, -1).sort(-1, descending=True).values, (0, 20))
    t = F.softmax(teacher, -1).sort(-1, descending=True).values
    assert sums.item() == pytest.approx((s - t).abs().sum().item(), rel=1e-5)
    assert counts.tolist() == [4.0]
    shuffled = teacher[:, torch.randperm(50, generator=torch.Generator().manual_seed(0))]
    assert loss.sums_and_counts(student, shuffled, pairs, torch.zeros(4, dtype=torch.long))[0].item() == pytest.approx(
        sums.item(), rel=1e-6
    )
    mask = torch.tensor([[True, True, True], [True, False, False], [True, True, False]])
    assert row_index(mask, torch.tensor([0, 1, 2, 2]), torch.tensor([2, 0, 0, 1])).tolist() == [2, 3, 4, 5]


def test_attention_maps_are_compared_by_kl_over_the_keys_of_each_query() -> None:
    from schemas.stages import AttentionLoss

    student = F.softmax(_logits(14, rows=5, width=7), -1)
    teacher = F.softmax(_logits(15, rows=5, width=7), -1)
    loss = LogitDistillLoss([AttentionLoss(type="attention", layers={-1: -1})], VOCAB)
    features = {("attention", -1, -1): (student, teacher)}
    total, terms = loss(_logits(16, rows=5), _logits(17, rows=5), _labels(5), features)
    expected = F.kl_div(student.log(), teacher, reduction="none").sum(-1).mean()
    assert total.item() == pytest.approx(expected.item(), rel=1e-5)
    same, _ = loss(_logits(16, rows=5), None, _labels(5), {("attention", -1, -1): (teacher, teacher)})
    assert same.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("kind", [ForwardKLLoss, ReverseKLLoss, JSDLoss])
def test_dynamic_temperature_compares_both_sides_at_one_spread_of_their_logits(kind) -> None:
    teacher = _logits(20)
    scaled = 4.0 * teacher + 1.5  # same ranking and gaps, a sharper and shifted copy
    name = kind.model_fields["type"].annotation.__args__[0]
    fixed = LogitDistillLoss([kind(type=name, temperature=2.0)], VOCAB)
    dynamic = LogitDistillLoss([kind(type=name, temperature=2.0, dynamic_temperature=True)], VOCAB)
    assert fixed(scaled, teacher, _labels())[0].item() > 0.5
    assert dynamic(scaled, teacher, _labels())[0].item() == pytest.approx(0.0, abs=1e-5)
    other = _logits(21)
    assert dynamic(other, teacher, _labels())[0].item() > 0.1


def test_dynamic_temperature_gives_the_student_the_teachers_spread_and_keeps_the_teachers_target() -> None:
    from components.losses.logit_losses import softened

    student, teacher = _logits(22, rows=3), _logits(23, rows=3) * torch.tensor([[1.0], [2.0], [0.5]])
    loss = ForwardKLLoss(type="forward_kl", temperature=3.0, dynamic_temperature=True)
    s_log, t_log = softened(loss, student, teacher)
    assert torch.allclose(t_log, F.log_softmax(teacher / 3.0, -1))
    t_student = 3.0 * student.std(-1) / teacher.std(-1)
    assert torch.allclose(s_log, F.log_softmax(student / t_student[:, None], -1), atol=1e-6)
    assert torch.allclose((student / t_student[:, None]).std(-1), (teacher / 3.0).std(-1))


def test_dynamic_temperature_gives_no_gradient_along_the_scale_of_the_students_logits() -> None:
    """Were the student's temperature a constant of the step, each step would shrink its logits a little
    (seen: a tiny student collapsed to uniform outputs); in the graph, the term cannot see their scale."""
    student, teacher = _logits(24).requires_grad_(), _logits(25)
    loss = LogitDistillLoss([ForwardKLLoss(type="forward_kl", temperature=2.0, dynamic_temperature=True)], VOCAB)
    loss(student, teacher, _labels())[0].backward()
    centred = (student - student.mean(-1, keepdim=True)).detach()
    radial = (student.grad * centred).sum(-1) / centred.norm(dim=-1)
    assert radial.abs().max().item() < 1e-6 * student.grad.norm(dim=-1).max().item() + 1e-9
    assert student.grad.norm().item() > 1e-4


def test_dynamic_temperature_keeps_the_gradient_of_a_flat_student_row_bounded() -> None:
    """A constant row has no spread to match: stretching it without bound gave gradients of 6e5 (0.19 fixed)."""
    student, teacher = torch.zeros(4, VOCAB, requires_grad=True), _logits(26, rows=4)
    loss = LogitDistillLoss([ForwardKLLoss(type="forward_kl", dynamic_temperature=True)], VOCAB)
    loss(student, teacher, _labels(4))[0].backward()
    fixed_student = torch.zeros(4, VOCAB, requires_grad=True)
    LogitDistillLoss([ForwardKLLoss(type="forward_kl")], VOCAB)(fixed_student, teacher, _labels(4))[0].backward()
    assert torch.isfinite(student.grad).all()
    assert student.grad.abs().max() <= 100 * fixed_student.grad.abs().max() * 1.001

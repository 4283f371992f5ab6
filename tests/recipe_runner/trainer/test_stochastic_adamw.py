"""bf16 AdamW with stochastic rounding: unbiased rounding, torch's AdamW on average, chunking that changes nothing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from recipe_runner.trainer.stochastic_adamw import StochasticRoundingAdamW, _pieces, stochastic_round


def test_rounding_is_unbiased_and_lands_on_a_neighbour():
    torch.manual_seed(0)
    for value in (1.0 + 2**-10, -3.0 - 2**-9, 2.5e-3, -7e4):
        bits = torch.tensor([value]).view(torch.int32) & -(1 << 16)  # toward zero, then one bf16 step away
        neighbours = {bits.view(torch.float32).item(), (bits + (1 << 16)).view(torch.float32).item()}
        rounded = stochastic_round(torch.full((200_000,), value)).float()
        assert {x.item() for x in rounded.unique()} == neighbours
        assert rounded.mean().item() == pytest.approx(value, rel=2e-4)


def test_zero_and_exact_bf16_values_are_kept():
    values = torch.tensor([0.0, -0.0, 1.0, -2.5, 3.0e38]).bfloat16().float()
    for _ in range(50):
        assert torch.equal(stochastic_round(values.clone()).float(), values)
    assert torch.signbit(stochastic_round(torch.tensor([-0.0])).float()).item()


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=6), budget=st.integers(1, 50))
def test_chunks_cover_every_element_once_within_the_budget(sizes: list[int], budget: int):
    params = [torch.empty(n) for n in sizes]
    covered = [torch.zeros(n, dtype=torch.int64) for n in sizes]
    for chunk in _pieces(params, budget):
        assert 0 < sum(stop - start for _, start, stop in chunk) <= budget
        for index, start, stop in chunk:
            covered[index][start:stop] += 1
    assert all(bool((c == 1).all()) for c in covered)


def _problem(seed: int) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    generator = torch.Generator().manual_seed(seed)
    # Weights near 0.1: bf16 spacing there (2^-11) is a tenth of an lr-1e-2 AdamW step, so 30 steps of rounding
    # noise stay well inside the tolerance while the weights move by up to 0.3.
    start = [0.1 * torch.randn(33, 7, generator=generator), 0.1 * torch.randn(50, generator=generator), torch.zeros(5)]
    grads = [[torch.randn(p.shape, generator=generator) for p in start] for _ in range(30)]
    return start, grads


def _train(optimizer_for, start, grads, dtype, device="cpu"):
    params = [torch.nn.Parameter(p.to(device, dtype, copy=True)) for p in start]
    optimizer = optimizer_for(params)
    for step_grads in grads:
        for param, grad in zip(params, step_grads, strict=True):
            param.grad = grad.to(device, dtype)
        optimizer.step()
    return params, optimizer


# On CUDA the update is compiled (one fused kernel per chunk); the CPU runs the same function eagerly.
DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


@pytest.mark.parametrize("device", DEVICES)
def test_follows_torch_adamw_in_float32_and_keeps_bf16_state(device: str):
    start, grads = _problem(0)
    settings_ = {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1}
    reference, _ = _train(lambda ps: torch.optim.AdamW(ps, **settings_), start, grads, torch.float32)
    torch.manual_seed(0)
    ours, optimizer = _train(
        lambda ps: StochasticRoundingAdamW(ps, **settings_), start, grads, torch.bfloat16, device=device
    )
    assert all(mine.dtype == torch.bfloat16 and mine.device.type == device for mine in ours)
    # 30 steps of rounding noise: over 12 seeds the largest difference was 0.004-0.014 and the mean 0.0008-0.0009
    # (bf16 spacing at these weights is 0.0005-0.002); CUDA draws other random numbers than the CPU.
    difference = torch.cat(
        [(mine.float().cpu() - theirs).abs().flatten() for mine, theirs in zip(ours, reference, strict=True)]
    )
    assert difference.max().item() < 0.025 and difference.mean().item() < 0.0015
    assert (reference[0] - start[0]).abs().max() > 0.1  # the weights did move: the closeness is not trivial
    state = optimizer.state[ours[0]]
    assert state["step"] == 30 and state["exp_avg"].dtype == state["exp_avg_sq"].dtype == torch.bfloat16


def test_chunk_size_does_not_change_the_moments_or_more_than_rounding_of_the_weights():
    start, grads = _problem(1)
    results = []
    for chunk in (7, 1 << 20):  # 7 splits every tensor across chunks
        torch.manual_seed(0)
        params, optimizer = _train(
            lambda ps, chunk=chunk: StochasticRoundingAdamW(ps, lr=1e-3, chunk_elements=chunk),
            start,
            grads[:3],
            torch.bfloat16,
        )
        results.append((params, optimizer))
    (small, small_opt), (large, large_opt) = results
    for a, b in zip(small, large, strict=True):
        assert torch.equal(small_opt.state[a]["exp_avg"], large_opt.state[b]["exp_avg"])
        assert torch.equal(small_opt.state[a]["exp_avg_sq"], large_opt.state[b]["exp_avg_sq"])
        spacing = 2.0 ** (torch.floor(torch.log2(b.float().abs().clamp_min(1e-6))) - 7)
        assert bool(((a.float() - b.float()).abs() <= 3 * spacing).all())


def test_parameters_without_gradients_are_skipped_and_other_dtypes_refused():
    used, unused = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16)), torch.nn.Parameter(torch.ones(2).bfloat16())
    optimizer = StochasticRoundingAdamW([used, unused], lr=0.1)
    used.grad = torch.ones_like(used)
    optimizer.step()
    assert unused not in optimizer.state and optimizer.state[used]["step"] == 1
    assert torch.equal(unused, torch.ones(2).bfloat16()) and bool((used < 1).all())
    wrong = torch.nn.Parameter(torch.ones(2))
    wrong.grad = torch.ones(2)
    with pytest.raises(TypeError, match="bfloat16"):
        StochasticRoundingAdamW([wrong]).step()


def test_rounding_noise_is_its_own_so_copies_of_the_weights_round_alike():
    """Under DDP each process draws its own dropout and samples from the global generator; its copy of the
    weights must still be rounded as the others are, and the global stream must not depend on the update."""
    start, grads = _problem(2)
    runs = []
    for global_seed in (0, 1234):
        torch.manual_seed(global_seed)
        params, _ = _train(lambda ps: StochasticRoundingAdamW(ps, lr=1e-3, seed=7), start, grads[:4], torch.bfloat16)
        runs.append((params, torch.rand(3)))
    assert all(torch.equal(a, b) for a, b in zip(runs[0][0], runs[1][0], strict=True))
    torch.manual_seed(0)
    assert torch.equal(runs[0][1], torch.rand(3)), "the global stream is as if no update had drawn from it"
    other, _ = _train(lambda ps: StochasticRoundingAdamW(ps, lr=1e-3, seed=8), start, grads[:4], torch.bfloat16)
    assert not all(torch.equal(a, b) for a, b in zip(runs[0][0], other, strict=True)), "the seed sets the noise"

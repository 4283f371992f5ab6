"""Learning-rate schedules per part (warmup, floors, restarts) and the optimizer's parameter groups."""

from __future__ import annotations

import math
from itertools import pairwise
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from recipe_runner.trainer.optim import build_optimizer, lr_multiplier
from schemas.stages import Stage

LR = {"student": 1e-3, "bolt_on": 4e-3}


def _stage(schedule: dict, *, warmup: int = 0, min_lr: dict | None = None, steps: int = 100, **extra) -> Stage:
    return Stage(
        name="s",
        steps=steps,
        trainable=extra.pop("trainable", ["student", "bolt_on"]),
        lr=extra.pop("lr", LR),
        min_lr=min_lr or {},
        schedule=schedule,
        warmup_steps=warmup,
        losses=[{"type": "huber", "on": "matched"}],
        **extra,
    )


def _lrs(stage: Stage, part: str, total: int) -> list[float]:
    factor = lr_multiplier(stage, part, total)
    return [LR[part] * factor(step) for step in range(total + 1)]


def test_constant_holds_the_peak_lr():
    assert _lrs(_stage({"type": "constant"}), "student", 50) == pytest.approx([1e-3] * 51)


def test_linear_goes_from_lr_to_min_lr():
    stage = _stage({"type": "linear"}, min_lr={"student": 1e-4})
    lrs = _lrs(stage, "student", 100)
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[50] == pytest.approx(1e-4 + 0.5 * 9e-4)
    assert lrs[100] == pytest.approx(1e-4)
    assert all(a >= b for a, b in pairwise(lrs))


def test_cosine_follows_half_a_cosine_down_to_min_lr():
    stage = _stage({"type": "cosine"}, min_lr={"student": 2e-4})
    lrs = _lrs(stage, "student", 100)
    for step in (0, 25, 50, 75, 100):
        expected = 2e-4 + 8e-4 * 0.5 * (1 + math.cos(math.pi * step / 100))
        assert lrs[step] == pytest.approx(expected)
    assert lrs[100] == pytest.approx(2e-4)


def test_default_floor_is_a_tenth_of_each_parts_lr():
    stage = _stage({"type": "cosine"})
    assert _lrs(stage, "student", 40)[-1] == pytest.approx(1e-4)
    assert _lrs(stage, "bolt_on", 40)[-1] == pytest.approx(4e-4)


def test_each_part_has_its_own_floor():
    stage = _stage({"type": "linear"}, min_lr={"student": 0.0, "bolt_on": 2e-3})
    assert _lrs(stage, "student", 10)[-1] == pytest.approx(0.0, abs=1e-12)
    assert _lrs(stage, "bolt_on", 10)[-1] == pytest.approx(2e-3)
    assert min(_lrs(stage, "bolt_on", 10)) >= 2e-3 - 1e-12


def test_cosine_restarts_with_a_growing_cycle():
    stage = _stage({"type": "cosine_restarts", "cycle_steps": 10, "cycle_mult": 2.0}, min_lr={"student": 0.0})
    factor = lr_multiplier(stage, "student", 1000)
    # cycles: [0, 10), [10, 30), [30, 70), ...
    for start in (0, 10, 30, 70):
        assert factor(start) == pytest.approx(1.0), f"restart at {start}"
    assert factor(5) == pytest.approx(0.5)  # half of the 10-step cycle
    assert factor(20) == pytest.approx(0.5)  # half of the 20-step cycle
    assert factor(50) == pytest.approx(0.5)  # half of the 40-step cycle
    assert factor(9) < 0.05 and factor(29) < 0.05 and factor(69) < 0.05


def test_cosine_restarts_without_mult_repeats_the_same_cycle():
    stage = _stage({"type": "cosine_restarts", "cycle_steps": 8}, min_lr={"student": 1e-4})
    factor = lr_multiplier(stage, "student", 100)
    assert [factor(s) for s in range(8)] == pytest.approx([factor(s) for s in range(16, 24)])
    assert factor(4) == pytest.approx(0.1 + 0.9 * 0.5)


def test_warmup_rises_linearly_then_the_schedule_starts_at_the_peak():
    stage = _stage({"type": "cosine"}, warmup=4, min_lr={"student": 0.0})
    factor = lr_multiplier(stage, "student", 24)
    assert [factor(s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert factor(4) == pytest.approx(1.0)
    assert factor(14) == pytest.approx(0.5)  # halfway through the 20 post-warmup steps
    assert factor(24) == pytest.approx(0.0, abs=1e-12)


class _Parts(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.student = nn.Sequential(nn.Embedding(10, 4), nn.LayerNorm(4), nn.Linear(4, 4))
        self.bolt_on = nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6))

    def by_part(self) -> dict:
        return {"student": list(self.student.parameters()), "bolt_on": list(self.bolt_on.parameters())}


def test_one_group_per_part_and_no_weight_decay_on_1d_params():
    model = _Parts()
    stage = _stage({"type": "constant"}, optimizer={"type": "adamw", "weight_decay": 0.05})
    optimizer, _, parts = build_optimizer(stage, model.by_part(), 10, device_type="cpu")
    assert parts == ["student", "student", "bolt_on", "bolt_on"]
    for group, part in zip(optimizer.param_groups, parts, strict=True):
        assert group["lr"] == pytest.approx(LR[part])
        assert all(p.ndim == (2 if group["weight_decay"] else 1) for p in group["params"])
    decayed = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0.05 for p in g["params"]}
    assert decayed == {id(p) for p in model.parameters() if p.ndim >= 2}
    every = [id(p) for g in optimizer.param_groups for p in g["params"]]
    assert sorted(every) == sorted(id(p) for p in model.parameters()), "each parameter in exactly one group"


def test_groups_follow_trainable_and_skip_frozen_params():
    model = _Parts()
    model.student[0].weight.requires_grad_(False)
    stage = _stage({"type": "constant"}, trainable=["bolt_on", "student"])
    optimizer, _, parts = build_optimizer(stage, model.by_part(), 10, device_type="cpu")
    assert parts[0] == "bolt_on"
    grouped = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert id(model.student[0].weight) not in grouped

    only_bolt_on = _stage({"type": "constant"}, trainable=["bolt_on"], lr={"bolt_on": 1e-2})
    optimizer, _, parts = build_optimizer(only_bolt_on, model.by_part(), 10, device_type="cpu")
    assert set(parts) == {"bolt_on"}
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.bolt_on.parameters()}


def test_scheduler_moves_every_group_along_its_own_curve():
    model = _Parts()
    stage = _stage({"type": "linear"}, warmup=2, min_lr={"student": 1e-4, "bolt_on": 1e-3}, steps=12)
    optimizer, scheduler, parts = build_optimizer(stage, model.by_part(), 12, device_type="cpu")
    seen = [scheduler.get_last_lr()]
    for _ in range(12):
        optimizer.step()
        scheduler.step()
        seen.append(scheduler.get_last_lr())
    for index, part in enumerate(parts):
        curve = [lrs[index] for lrs in seen]
        factor = lr_multiplier(stage, part, 12)
        assert curve == pytest.approx([LR[part] * factor(s) for s in range(13)])
        assert curve[2] == pytest.approx(LR[part])
        assert curve[-1] == pytest.approx(stage.min_lr_for(part))


def test_an_unsupported_optimizer_is_refused():
    stage = _stage({"type": "constant"}).model_copy(update={"optimizer": SimpleNamespace(type="sgd")})
    with pytest.raises(TypeError, match="not supported"):
        build_optimizer(stage, _Parts().by_part(), 10, device_type="cpu")


def test_parameters_keep_their_dtype_and_train():
    model = _Parts()
    stage = _stage({"type": "constant"})
    optimizer, scheduler, _ = build_optimizer(stage, model.by_part(), 10, device_type="cpu")
    before = model.bolt_on[0].weight.detach().clone()
    out = model.bolt_on(model.student(torch.tensor([[1, 2, 3]]))).sum()
    out.backward()
    optimizer.step()
    scheduler.step()
    assert not torch.equal(before, model.bolt_on[0].weight)


def _drift_of_small_updates(trained_weights: str) -> float:
    """Mean move of bf16 weights at 1.0 after 20 AdamW steps of lr 1e-3, a quarter of bf16's spacing there."""
    weight = nn.Parameter(torch.ones(4096, 2, dtype=torch.bfloat16))
    stage = _stage(
        {"type": "constant"},
        trainable=["bolt_on"],
        lr={"bolt_on": 1e-3},
        optimizer={"type": "adamw", "weight_decay": 0},
    )
    optimizer, scheduler, _ = build_optimizer(stage, {"bolt_on": [weight]}, 20, "cpu", trained_weights)
    torch.manual_seed(0)
    for _ in range(20):
        weight.grad = torch.ones_like(weight)
        optimizer.step()
        scheduler.step()
    return 1.0 - weight.float().mean().item()


def test_bf16_stochastic_rounding_keeps_updates_smaller_than_bf16_spacing():
    assert _drift_of_small_updates("fp32") == 0.0  # plain AdamW on bf16 weights rounds every step away
    assert _drift_of_small_updates("bf16_stochastic") == pytest.approx(20 * 1e-3, rel=0.1)


def _after_three_updates(fused: bool | None) -> tuple[torch.optim.Optimizer, torch.Tensor, torch.Tensor]:
    """The optimizer, and every weight before and after three AdamW steps on the same seeded model."""
    torch.manual_seed(0)
    model = _Parts()
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])
    optimizer_spec = {"type": "adamw", "weight_decay": 0.05} | ({} if fused is None else {"fused": fused})
    stage = _stage({"type": "constant"}, optimizer=optimizer_spec)
    optimizer, _, _ = build_optimizer(stage, model.by_part(), 10, device_type="cpu")
    for _ in range(3):
        model.bolt_on(model.student(torch.tensor([[1, 2, 3]]))).pow(2).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    return optimizer, before, torch.cat([p.detach().flatten() for p in model.parameters()])


def test_adamw_is_fused_on_a_cpu_by_default_and_steps_as_the_unfused_one():
    fused, before, fused_after = _after_three_updates(None)
    plain, _, plain_after = _after_three_updates(False)
    assert fused.defaults["fused"] is True
    assert not plain.defaults["fused"]
    assert not torch.allclose(fused_after, before)
    assert torch.allclose(fused_after, plain_after, atol=1e-6)

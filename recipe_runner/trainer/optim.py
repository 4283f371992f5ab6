"""Parameter groups with their own lr and min_lr per part, and the schedules that move between them."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from recipe_runner.trainer.stochastic_adamw import StochasticRoundingAdamW
from schemas.hardware import TrainedWeights
from schemas.stages import (
    AdamW,
    ConstantSchedule,
    CosineRestartsSchedule,
    CosineSchedule,
    LinearSchedule,
    Part,
    Stage,
)

FUSED_ADAMW_DEVICES = ("cuda", "cpu")  # torch >= 2.4 has a fused AdamW kernel for both


def _decay(schedule, step: int, total: int) -> float:
    """Fraction of the way from min_lr (0.0) to lr (1.0) after warmup, at `step` of `total`."""
    if isinstance(schedule, ConstantSchedule):
        return 1.0
    progress = min(1.0, step / max(1, total))
    if isinstance(schedule, LinearSchedule):
        return 1.0 - progress
    if isinstance(schedule, CosineSchedule):
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if isinstance(schedule, CosineRestartsSchedule):
        cycle, position = schedule.cycle_steps, step
        while position >= cycle:
            position -= cycle
            cycle = max(1, int(round(cycle * schedule.cycle_mult)))
        return 0.5 * (1.0 + math.cos(math.pi * position / cycle))
    raise TypeError(f"schedule {type(schedule).__name__} is not supported yet")


def lr_multiplier(stage: Stage, part: Part, total_steps: int) -> Callable[[int], float]:
    """LambdaLR factor for one part: linear warmup to lr, then the schedule down to that part's min_lr."""
    lr = stage.lr.get(part) or 0.0
    floor = stage.min_lr_for(part) / lr if lr > 0 else 0.0
    warmup = stage.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        return floor + (1.0 - floor) * _decay(stage.schedule, step - warmup, total_steps - warmup)

    return factor


def build_optimizer(
    stage: Stage,
    params_by_part: dict[Part, list[torch.nn.Parameter]],
    total_steps: int,
    device_type: str,
    trained_weights: TrainedWeights = "fp32",
    seed: int = 0,
) -> tuple[torch.optim.Optimizer, LambdaLR, list[Part]]:
    """One parameter group per trainable part (in `stage.trainable` order); biases and norms get no decay.

    AdamW is fused by default on CUDA and on a CPU alike: on a CPU torch's default is one small op per tensor and
    moment (the slowest of its three AdamW paths), and one implementation everywhere means CPU tests exercise the
    kernel a GPU run steps with."""
    spec = stage.optimizer
    if not isinstance(spec, AdamW):
        raise TypeError(f"optimizer {spec.type!r} is not supported yet")
    groups, parts = [], []
    for part in stage.trainable:
        params = [p for p in params_by_part[part] if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        for chunk, weight_decay in ((decay, spec.weight_decay), (no_decay, 0.0)):
            if chunk:
                groups.append({"params": chunk, "lr": stage.lr.get(part), "weight_decay": weight_decay})
                parts.append(part)
    if trained_weights == "bf16_stochastic":
        optimizer = StochasticRoundingAdamW(groups, betas=spec.betas, eps=spec.eps, seed=seed)
    else:
        fused = spec.fused if spec.fused is not None else device_type in FUSED_ADAMW_DEVICES
        optimizer = torch.optim.AdamW(groups, betas=spec.betas, eps=spec.eps, fused=fused or None)
    scheduler = LambdaLR(optimizer, [lr_multiplier(stage, part, total_steps) for part in parts])
    return optimizer, scheduler, parts

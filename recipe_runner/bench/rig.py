"""The timed training steps of `recipe bench`, for any family: a Rig says what one micro-batch computes, and the
loop around it warms up, compiles outside the clock, times, splits a step into phases and counts host ops."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from pydantic import Field
from torch import nn

from components.models.checkpointing import StudentCheckpointing
from components.models.compilation import compiled_graphs
from recipe_runner.bench.flops import FlopPart, peak_flops, step_flops
from recipe_runner.bench.host_ops import OpCounter
from recipe_runner.bench.spec import BenchSpec
from recipe_runner.bench.timing import PHASES, PeakMemory, PhaseClock, device_name, now, profiled
from recipe_runner.plan import build_plan
from schemas import Recipe
from schemas.base import StrictModel
from schemas.hardware import TrainedWeights

_PHASES_TIMED = 3
AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingResult(StrictModel):
    """Figures of the timed optimizer steps (after warmup)."""

    stage: str = Field(description="The stage timed (its losses and trainable parts): the recipe's first.")
    later_stages: list[str] = Field(description="The recipe's other stages, which the bench does not time.")
    batch_size: int
    batch_tokens: int | None = Field(description="hardware.batch_tokens: the padded-token cap of a micro-batch.")
    real_prompts_per_step: float = Field(description="Prompts per timed optimizer step (all micro-batches).")
    grad_accum: int
    precision: str
    gradient_checkpointing: bool
    checkpointed_fraction: float = Field(description="Share of timed micro-batches that recomputed activations.")
    trained_weights: TrainedWeights = Field(description="hardware.trained_weights: fp32 masters or bf16_stochastic.")
    compiled: bool = Field(description="hardware.compile: the repeated blocks of student and bolt-on compiled.")
    packed_sequences: bool = Field(
        description="hardware.packed_sequences resolved: student and bolt-on ran on real tokens only (padding "
        "fraction below is then that of the padded batches the losses still see, not computed on)."
    )
    packing_note: str | None = Field(description="Why `auto` stayed padded on this device, when it did.")
    compile_warmup_s: float | None = Field(
        description="With compile: wall time of the warmup steps plus one untimed pass over the timed batches, "
        "so that compiling and recompiling for their shapes stays outside the clock; null without compile."
    )
    graphs_compiled_while_timed: int | None = Field(
        description="torch.compile graphs built during the timed steps (0 when the warm-up covered every shape); "
        "null without compile."
    )
    warmup_steps: int
    timed_steps: int
    step_time_s: float = Field(description="Mean wall time of one optimizer step.")
    update_time_s: float = Field(
        description="Of which the update alone (gradient clipping, optimizer step, zeroing): phase_time_s['update']."
    )
    phase_time_s: dict[str, float] = Field(
        description=f"Where a step goes: each phase of {PHASES} timed apart after the timed steps, with a device "
        f"synchronisation at every boundary (median of up to {_PHASES_TIMED} steps; a phase's micro-batches summed)."
    )
    real_tokens_per_s: float = Field(description="Non-padding student tokens per second.")
    real_tokens_per_step: float
    padding_fraction: float = Field(description="Share of the padded student positions that are padding.")
    peak_memory_bytes: int | None = Field(
        description="Over the warm-up and timed steps; null where it could not be measured (see the method)."
    )
    peak_memory_method: str
    plan_estimate_bytes: int = Field(description="`recipe plan` formula (padding to max_length; worst case).")
    plan_counts_runtime: bool = Field(
        description="Whether the plan estimate holds 1 GiB of CUDA runtime (a recipe whose device is not cpu)."
    )
    model_flops_per_step: float
    achieved_tflops: float
    peak_tflops: float | None
    peak_source: str
    mfu: float | None = Field(description="achieved / peak FLOP/s; null when the peak is unknown.")
    flop_parts: list[FlopPart]
    ops_per_step: dict[str, int] | None = Field(
        description="aten operations (views excluded) one optimizer step dispatches, by phase (as phase_time_s): "
        "on a GPU each is about one kernel launch, paid in host time whatever "
        "its size. Counted on one timed step's batches after the clock; null with compile (compiled blocks run as "
        "fused graphs). Counted on CPUs in this project; the CUDA count has not been checked."
    )
    teacher_targets: str
    last_loss: float


class PhaseObserver(Protocol):
    """What a step tells as it goes: the phase it enters (a PhaseClock, an OpCounter)."""

    def enter(self, phase: str) -> None: ...


def ignore_phase(phase: str) -> None:
    """Stands in for `enter` when nobody observes."""


@dataclass
class Rig:
    """One family's training step, built as the trainer builds it: `micro_loss(batch, enter, observer)` runs the
    forward passes and the loss of one micro-batch under autocast, calling `enter` at each phase boundary."""

    model: nn.Module
    checkpointing: StudentCheckpointing
    optimizer: torch.optim.Optimizer
    scheduler: Any
    batches: list
    micro_loss: Callable[[Any, Callable[[str], None], PhaseObserver | None], torch.Tensor]
    flop_parts: list[FlopPart]
    teacher_targets: str
    compiled: bool
    packing_note: str | None
    marked: Callable[[PhaseObserver | None], AbstractContextManager] = field(default=lambda observer: nullcontext())


def time_rig(rig: Rig, recipe: Recipe, spec: BenchSpec, device: torch.device) -> TrainingResult:
    """Warmup steps, then timed optimizer steps between two device synchronisations."""
    hw, stage = recipe.hardware, recipe.stages[0]
    total = spec.warmup_steps + spec.timed_steps
    if device.type == "cuda":  # the trainer's loader pins, so its host-to-GPU copies are asynchronous
        rig.batches = [batch.pin_memory() for batch in rig.batches]
    autocast = torch.autocast(device.type, dtype=AUTOCAST.get(hw.precision), enabled=hw.precision != "fp32")
    scaler = torch.amp.GradScaler(device.type, enabled=hw.precision == "fp16")
    model, optimizer, recomputed = rig.model, rig.optimizer, []
    model.train()
    memory = PeakMemory(device)
    loss = torch.zeros(())

    def accumulate(index: int, observer: PhaseObserver | None = None) -> torch.Tensor:
        enter = observer.enter if observer is not None else ignore_phase
        for micro in range(hw.grad_accum):
            enter("batch")
            batch = rig.batches[index * hw.grad_accum + micro].to(device)
            recomputed.append(rig.checkpointing.for_batch(batch.student_ids.numel()))
            enter("student")
            with autocast:
                loss = rig.micro_loss(batch, enter, observer)
            enter("loss_backward")
            scaler.scale(loss / hw.grad_accum).backward()
        return loss.detach()

    def update(observer: PhaseObserver | None = None) -> None:
        if observer is not None:
            observer.enter("update")
        if stage.grad_clip is not None:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(model.parameters(), stage.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        rig.scheduler.step()

    def step(index: int, observer: PhaseObserver | None = None) -> torch.Tensor:
        with rig.marked(observer):
            loss = accumulate(index, observer)
            update(observer)
        return loss

    memory.start()  # from the warm-up on: it holds the largest batch (see batch_indices)
    started = now(device)
    for index in range(spec.warmup_steps):
        step(index)
    compile_warmup = None
    if rig.compiled:  # compiling and recompiling for the timed batches' shapes happens here, not inside the clock
        for index in range(spec.warmup_steps, total):
            step(index)
        compile_warmup = now(device) - started
    recomputed.clear()
    graphs_before = compiled_graphs()
    with profiled(spec.profile, device):
        started = now(device)
        for index in range(spec.warmup_steps, total):
            loss = step(index)
        elapsed = now(device) - started
    checkpointed_fraction = sum(recomputed) / max(1, len(recomputed))
    phase_runs = []
    for index in range(spec.warmup_steps, spec.warmup_steps + min(_PHASES_TIMED, spec.timed_steps)):
        clock = PhaseClock(device)
        step(index, clock)
        phase_runs.append(clock.stop())
    phase_seconds = {phase: statistics.median(run[phase] for run in phase_runs) for phase in PHASES}
    ops = None
    if not rig.compiled:
        with OpCounter() as counter:
            step(spec.warmup_steps, counter)
        ops = counter.per_phase()
    timed = rig.batches[spec.warmup_steps * hw.grad_accum :]
    real = [int(n) for batch in timed for n in batch.student_mask.sum(dim=1).tolist()]
    padded = sum(batch.student_mask.numel() for batch in timed)
    parts = rig.flop_parts
    flops = step_flops(parts, real) / spec.timed_steps
    step_time = elapsed / spec.timed_steps
    peak, source = peak_flops(device_name(device), hw.precision, spec.peak_tflops)
    return TrainingResult(
        stage=stage.name,
        later_stages=[later.name for later in recipe.stages[1:]],
        batch_size=hw.batch_size,
        batch_tokens=hw.batch_tokens,
        real_prompts_per_step=len(real) / spec.timed_steps,
        grad_accum=hw.grad_accum,
        precision=hw.precision,
        gradient_checkpointing=hw.gradient_checkpointing,
        checkpointed_fraction=checkpointed_fraction,
        trained_weights=hw.trained_weights,
        compiled=rig.compiled,
        packed_sequences=model.packed,
        packing_note=None if model.packed else rig.packing_note,
        compile_warmup_s=compile_warmup,
        graphs_compiled_while_timed=compiled_graphs() - graphs_before if rig.compiled else None,
        warmup_steps=spec.warmup_steps,
        timed_steps=spec.timed_steps,
        step_time_s=step_time,
        update_time_s=phase_seconds["update"],
        phase_time_s=phase_seconds,
        real_tokens_per_s=sum(real) / elapsed,
        real_tokens_per_step=sum(real) / spec.timed_steps,
        padding_fraction=1 - sum(real) / padded,
        peak_memory_bytes=memory.peak_bytes(),
        peak_memory_method=memory.method,
        plan_estimate_bytes=build_plan(recipe).stages[0].memory.total_bytes,
        plan_counts_runtime=hw.device != "cpu",
        model_flops_per_step=flops,
        achieved_tflops=flops / step_time / 1e12,
        peak_tflops=None if peak is None else peak / 1e12,
        peak_source=source,
        mfu=None if peak is None else flops / step_time / peak,
        flop_parts=parts,
        ops_per_step=ops,
        teacher_targets=rig.teacher_targets,
        last_loss=float(loss),
    )

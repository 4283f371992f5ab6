"""Training-step throughput on length-distributed batches, built and stepped the way the trainer does it.

Batches: random token ids with lengths from the shipped distribution, length-bucketed (`bucketed_batches`) and
collated by the trainer's `Collator` (padding to the batch's longest prompt). Teacher targets are random tensors
in the cache dtype, shaped as the cache stores them (real tokens + 1 pad); without a cache the teacher runs
online. Alignment is synthetic: 4 of 5 real tokens matched 1:1 by position, the 5th in 1:1 split groups, no
window candidates; the loss gathers cost the same per pair as with real alignments.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Protocol

import numpy as np
import torch
from pydantic import Field

from components.alignment import SampleAlignment
from components.bolt_on import build_bolt_on
from components.cache.writer import DTYPES
from components.data.pipeline import Collator, DistillBatch
from components.losses import DistillLoss
from components.models import freeze, hidden_width, resolve_config
from components.models.checkpointing import StudentCheckpointing
from components.models.compilation import compile_for_varied_lengths, compile_wanted, compiled_graphs
from components.teacher_outputs import encode_teacher
from recipe_runner.bench.flops import FlopPart, peak_flops, step_flops
from recipe_runner.bench.host_ops import OpCounter
from recipe_runner.bench.lengths import batches_over_epochs
from recipe_runner.bench.models import attention_shape, build_random, dense_parameters
from recipe_runner.bench.spec import BenchSpec
from recipe_runner.bench.timing import PHASES, PeakMemory, PhaseClock, device_name, now, profiled
from recipe_runner.plan import build_plan
from recipe_runner.trainer.optim import build_optimizer
from recipe_runner.trainer.packing import choose_packing
from recipe_runner.trainer.parts import DistillModel, set_trained_dtype
from recipe_runner.trainer.stage_setup import enter_stage, parameters_by_part
from schemas import Recipe
from schemas.base import StrictModel
from schemas.bolt_on import TransformerLayer
from schemas.hardware import Hardware, TrainedWeights

_PHASES_TIMED = 3
_AUTOCAST = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingResult(StrictModel):
    """Figures of the timed optimizer steps (after warmup)."""

    stage: str
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
    peak_memory_bytes: int
    peak_memory_method: str
    plan_estimate_bytes: int = Field(description="`recipe plan` formula (padding to max_length; worst case).")
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


def _ignore(phase: str) -> None:
    """Stands in for `enter` when nobody observes."""


@contextmanager
def _bolt_on_marked(model: DistillModel, observer: PhaseObserver | None) -> Iterator[None]:
    """The student's forward ends where the bolt-on's begins, inside the model's forward, and its backward begins
    when the gradient of the bolt-on's input is complete: hooks mark both."""
    if observer is None:
        yield
        return

    def mark(module: torch.nn.Module, args: tuple) -> None:
        observer.enter("bolt_on")
        if args[0].requires_grad:
            args[0].register_hook(lambda grad: observer.enter("student_backward"))

    handle = model.bolt_on.register_forward_pre_hook(mark)
    try:
        yield
    finally:
        handle.remove()


def _sample(n: int, rng: np.random.Generator, vocab: int, chroma: bool, width: int, dtype: torch.dtype) -> dict:
    """One item as `PromptPairs` + a cache would give it, with random contents."""
    positions = np.arange(n, dtype=np.int64)
    split = positions[positions % 5 == 4]
    alignment = SampleAlignment(
        matched_s=positions[positions % 5 != 4],
        matched_t=positions[positions % 5 != 4],
        split_s=split,
        split_s_group=np.arange(len(split), dtype=np.int64),
        split_t=split,
        split_t_group=np.arange(len(split), dtype=np.int64),
    )
    hidden = torch.from_numpy(rng.standard_normal((n + int(chroma), width), dtype=np.float32)).to(dtype)
    return {
        "student_ids": rng.integers(0, vocab, n),
        "teacher_ids": rng.integers(0, vocab, n),
        "alignment": alignment,
        "teacher_hidden": hidden,
    }


def _batch_indices(capped: list[int], hw: Hardware, count: int, first_timed: int) -> list[list[int]]:
    """`count` batches in the trainer's bucketed order, with the distribution's largest batch (padded tokens)
    among the timed ones, so that peak memory is that of the worst batch and not of a lucky draw."""
    batches = batches_over_epochs(capped, hw, count)
    chosen = batches[:count]
    largest = max(batches, key=lambda batch: len(batch) * max(capped[i] for i in batch))
    if all(batch is not largest for batch in chosen[first_timed:]):
        chosen[first_timed] = largest
    return chosen


def _batches(
    recipe: Recipe, lengths: list[int], count: int, first_timed: int, vocab: int, width: int, cached: bool
) -> list[DistillBatch]:
    """`count` collated micro-batches (see `_batch_indices`) with random contents."""
    hw = recipe.hardware
    capped = [min(n, recipe.student.max_length, recipe.teacher.max_length) for n in lengths]
    rng = np.random.default_rng(hw.seed)
    dtype = DTYPES[recipe.teacher_cache.dtype if recipe.teacher_cache else "bfloat16"]
    collate = Collator(0, 0, recipe.teacher.chroma_mask)
    out: list[DistillBatch] = []
    for indices in _batch_indices(capped, hw, count, first_timed):
        items = [
            {"index": i, **_sample(capped[i], rng, vocab, recipe.teacher.chroma_mask, width, dtype)} for i in indices
        ]
        if not cached:
            for item in items:
                del item["teacher_hidden"]
        out.append(collate(items))
    return out


def _flop_parts(model: DistillModel, recipe: Recipe, student_attention: int, teacher) -> list[FlopPart]:
    """Trained / frozen-but-backpropagated / forward-only parameter counts per part (see flops.FLOP_FORMULA)."""
    bolt_attention = sum(
        layer.layers * layer.dim for layer in recipe.bolt_on.layers if isinstance(layer, TransformerLayer)
    )
    parts: list[FlopPart] = []
    upstream_trains = False
    for name, module, attention in (
        ("student", model.student, student_attention),
        ("bolt_on", model.bolt_on, bolt_attention),
    ):
        dense = dense_parameters(module)
        trained = sum(p.numel() for p in dense if p.requires_grad)
        frozen = sum(p.numel() for p in dense if not p.requires_grad)
        upstream_trains = upstream_trains or trained > 0
        if trained:
            parts.append(
                FlopPart(name=name, role="trained", dense_params=trained, attention=0 if frozen else attention)
            )
        if frozen:
            role = "frozen_backprop" if upstream_trains else "frozen_forward"
            parts.append(FlopPart(name=f"{name} (frozen)", role=role, dense_params=frozen, attention=attention))
    if teacher is not None:
        layers, width = attention_shape(teacher)
        dense = sum(p.numel() for p in dense_parameters(teacher))
        parts.append(
            FlopPart(name="teacher (online)", role="frozen_forward", dense_params=dense, attention=layers * width)
        )
    return parts


def run_training(recipe: Recipe, spec: BenchSpec, lengths: list[int], device: torch.device) -> TrainingResult:
    """Warmup steps, then timed optimizer steps between two device synchronisations."""
    hw, stage = recipe.hardware, recipe.stages[0]
    student = build_random(recipe.student, "student", device, hw.seed, hw.attention, hw.fused_kernels)
    student_layers, student_width = attention_shape(student)
    teacher_width = hidden_width(resolve_config(recipe.teacher))
    cached = recipe.teacher_cache is not None
    teacher = (
        None
        if cached
        else freeze(build_random(recipe.teacher, "teacher", device, hw.seed, hw.attention, hw.fused_kernels))
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(hw.seed)
        bolt_on = build_bolt_on(recipe.bolt_on, hidden_width(student.config), teacher_width).to(device)
    checkpointing = StudentCheckpointing(student, hw.gradient_checkpointing, hw.checkpoint_min_tokens)
    recomputed: list[bool] = []
    model = set_trained_dtype(DistillModel(student, bolt_on, recipe.student.layer), recipe)
    packing_note = choose_packing(model, recipe, device)
    enter_stage(model, stage)
    total = spec.warmup_steps + spec.timed_steps
    optimizer, scheduler, _ = build_optimizer(stage, parameters_by_part(model), total, device.type, hw.trained_weights)
    compiled = compile_wanted(hw.compile, device.type)
    forward = compile_for_varied_lengths(model) if compiled else model
    loss_fn = DistillLoss(stage.losses, recipe.alignment, compiled)
    vocab = min(student.config.vocab_size, resolve_config(recipe.teacher).vocab_size)
    first_timed = spec.warmup_steps * hw.grad_accum
    batches = _batches(recipe, lengths, total * hw.grad_accum, first_timed, vocab, teacher_width, cached)
    if device.type == "cuda":  # the trainer's loader pins, so its host-to-GPU copies are asynchronous
        batches = [batch.pin_memory() for batch in batches]
    autocast = torch.autocast(device.type, dtype=_AUTOCAST.get(hw.precision), enabled=hw.precision != "fp32")
    scaler = torch.amp.GradScaler(device.type, enabled=hw.precision == "fp16")
    model.train()
    memory = PeakMemory(device)
    loss = torch.zeros(())

    def accumulate(index: int, observer: PhaseObserver | None = None) -> torch.Tensor:
        enter = observer.enter if observer is not None else _ignore
        for micro in range(hw.grad_accum):
            enter("batch")
            batch = batches[index * hw.grad_accum + micro].to(device)
            recomputed.append(checkpointing.for_batch(batch.student_ids.numel()))
            enter("student")
            with autocast:
                out = forward(batch.student_ids, batch.student_mask, batch.student_packing)
                target = batch.teacher_hidden
                if teacher is not None:
                    enter("teacher")
                    target = encode_teacher(teacher, batch.teacher_ids, batch.teacher_mask)
                enter("loss")
                loss, _ = loss_fn.training_loss(out, batch.student_mask, target, batch.teacher_mask, batch.alignment)
            if observer is not None:
                out.register_hook(lambda grad: observer.enter("bolt_on_backward"))
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
        scheduler.step()

    def step(index: int, observer: PhaseObserver | None = None) -> torch.Tensor:
        with _bolt_on_marked(model, observer):
            loss = accumulate(index, observer)
            update(observer)
        return loss

    started = now(device)
    for index in range(spec.warmup_steps):
        step(index)
    compile_warmup = None
    if compiled:  # compiling and recompiling for the timed batches' shapes happens here, not inside the clock
        for index in range(spec.warmup_steps, total):
            step(index)
        compile_warmup = now(device) - started
    memory.start()
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
    if not compiled:
        with OpCounter() as counter:
            step(spec.warmup_steps, counter)
        ops = counter.per_phase()
    timed = batches[spec.warmup_steps * hw.grad_accum :]
    real = [int(n) for batch in timed for n in batch.student_mask.sum(dim=1).tolist()]
    padded = sum(batch.student_mask.numel() for batch in timed)
    parts = _flop_parts(model, recipe, student_layers * student_width, teacher)
    flops = step_flops(parts, real) / spec.timed_steps
    step_time = elapsed / spec.timed_steps
    peak, source = peak_flops(device_name(device), hw.precision, spec.peak_tflops)
    return TrainingResult(
        stage=stage.name,
        batch_size=hw.batch_size,
        batch_tokens=hw.batch_tokens,
        real_prompts_per_step=len(real) / spec.timed_steps,
        grad_accum=hw.grad_accum,
        precision=hw.precision,
        gradient_checkpointing=hw.gradient_checkpointing,
        checkpointed_fraction=checkpointed_fraction,
        trained_weights=hw.trained_weights,
        compiled=compiled,
        packed_sequences=model.packed,
        packing_note=None if model.packed else packing_note,
        compile_warmup_s=compile_warmup,
        graphs_compiled_while_timed=compiled_graphs() - graphs_before if compiled else None,
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
        model_flops_per_step=flops,
        achieved_tflops=flops / step_time / 1e12,
        peak_tflops=None if peak is None else peak / 1e12,
        peak_source=source,
        mfu=None if peak is None else flops / step_time / peak,
        flop_parts=parts,
        ops_per_step=ops,
        teacher_targets=(
            f"random tensors in the cache dtype ({recipe.teacher_cache.dtype}), real tokens + 1 pad per prompt"
            if cached
            else "online teacher forward (no teacher.cache)"
        ),
        last_loss=float(loss),
    )

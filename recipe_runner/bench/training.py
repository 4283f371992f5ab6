"""Training-step throughput on length-distributed batches, built and stepped the way the trainer does it.

Batches: random token ids with lengths from the shipped distribution, length-bucketed (`bucketed_batches`) and
collated by the trainer's `Collator` (padding to the batch's longest prompt). Teacher targets are random tensors
in the cache dtype, shaped as the cache stores them (real tokens + 1 pad); without a cache the teacher runs
online. Alignment is synthetic: 4 of 5 real tokens matched 1:1 by position, the 5th in 1:1 split groups, no
window candidates; the loss gathers cost the same per pair as with real alignments.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

from components.alignment import SampleAlignment
from components.bolt_on import build_bolt_on
from components.cache.writer import DTYPES
from components.data.pipeline import Collator, DistillBatch
from components.losses import DistillLoss
from components.models import freeze, hidden_width, resolve_config
from components.models.checkpointing import StudentCheckpointing
from components.models.compilation import compile_for_varied_lengths, compile_wanted
from components.teacher_outputs import encode_teacher
from recipe_runner.bench.flops import FlopPart
from recipe_runner.bench.lengths import batches_over_epochs
from recipe_runner.bench.models import attention_shape, build_random, dense_parameters
from recipe_runner.bench.rig import PhaseObserver, Rig, TrainingResult, time_rig
from recipe_runner.bench.spec import BenchSpec
from recipe_runner.trainer.optim import build_optimizer
from recipe_runner.trainer.packing import choose_packing
from recipe_runner.trainer.parts import DistillModel, set_trained_dtype
from recipe_runner.trainer.stage_setup import enter_stage, parameters_by_part
from schemas import Recipe
from schemas.bolt_on import TransformerLayer
from schemas.hardware import Hardware


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


def synthetic_alignment(n: int) -> SampleAlignment:
    """The benchmark's alignment of two n-token texts: 4 of 5 tokens matched 1:1 by position, the 5th in 1:1
    split groups (the loss gathers cost the same per pair as with real alignments)."""
    positions = np.arange(n, dtype=np.int64)
    split = positions[positions % 5 == 4]
    return SampleAlignment(
        matched_s=positions[positions % 5 != 4],
        matched_t=positions[positions % 5 != 4],
        split_s=split,
        split_s_group=np.arange(len(split), dtype=np.int64),
        split_t=split,
        split_t_group=np.arange(len(split), dtype=np.int64),
        sequence_s=positions,
        sequence_t=positions,
    )


def _sample(n: int, rng: np.random.Generator, vocab: int, chroma: bool, width: int, dtype: torch.dtype) -> dict:
    """One item as `PromptPairs` + a cache would give it, with random contents."""
    alignment = synthetic_alignment(n)
    hidden = torch.from_numpy(rng.standard_normal((n + int(chroma), width), dtype=np.float32)).to(dtype)
    return {
        "student_ids": rng.integers(0, vocab, n),
        "teacher_ids": rng.integers(0, vocab, n),
        "alignment": alignment,
        "teacher_hidden": hidden,
    }


def batch_indices(capped: list[int], hw: Hardware, count: int, first_timed: int) -> list[list[int]]:
    """`count` batches in the trainer's bucketed order, with the distribution's largest batch (padded tokens)
    among them, so that peak memory (counted from the warm-up on) is that of the worst batch and not of a lucky
    draw: in the warm-up where there is one, so that the timed batches stay a plain draw of the distribution
    (throughput weighted towards the largest batch would read high)."""
    batches = batches_over_epochs(capped, hw, count)
    chosen = batches[:count]
    largest = max(batches, key=lambda batch: len(batch) * max(capped[i] for i in batch))
    if all(batch is not largest for batch in chosen):
        chosen[0 if first_timed > 0 else first_timed] = largest
    return chosen


def _batches(
    recipe: Recipe, lengths: list[int], count: int, first_timed: int, vocab: int, width: int, cached: bool
) -> list[DistillBatch]:
    """`count` collated micro-batches (see `batch_indices`) with random contents."""
    hw = recipe.hardware
    capped = [min(n, recipe.student.max_length, recipe.teacher.max_length) for n in lengths]
    rng = np.random.default_rng(hw.seed)
    dtype = DTYPES[recipe.teacher_cache.dtype if recipe.teacher_cache else "bfloat16"]
    collate = Collator(0, 0, recipe.teacher.chroma_mask)
    out: list[DistillBatch] = []
    for indices in batch_indices(capped, hw, count, first_timed):
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


def _hidden_state_rig(recipe: Recipe, spec: BenchSpec, lengths: list[int], device: torch.device) -> Rig:
    """The embedding family's step: student + bolt-on against cached (random) or online teacher targets."""
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
    model = set_trained_dtype(DistillModel(student, bolt_on, recipe.student.layer), recipe)
    packing_note = choose_packing(model, recipe, device)
    enter_stage(model, stage, hw.trained_weights)
    total = spec.warmup_steps + spec.timed_steps
    optimizer, scheduler, _ = build_optimizer(stage, parameters_by_part(model), total, device.type, hw.trained_weights)
    compiled = compile_wanted(hw.compile, device.type)
    forward = compile_for_varied_lengths(model) if compiled else model
    loss_fn = DistillLoss(stage.losses, recipe.alignment, compiled)
    vocab = min(student.config.vocab_size, resolve_config(recipe.teacher).vocab_size)
    first_timed = spec.warmup_steps * hw.grad_accum
    batches = _batches(recipe, lengths, total * hw.grad_accum, first_timed, vocab, teacher_width, cached)

    def micro_loss(batch: DistillBatch, enter, observer: PhaseObserver | None) -> torch.Tensor:
        out = forward(batch.student_ids, batch.student_mask, batch.student_packing)
        target = batch.teacher_hidden
        if teacher is not None:
            enter("teacher")
            target = encode_teacher(teacher, batch.teacher_ids, batch.teacher_mask)
        enter("loss")
        loss, _ = loss_fn.training_loss(out, target, batch.alignment)
        if observer is not None:
            out.register_hook(lambda grad: observer.enter("bolt_on_backward"))
        return loss

    return Rig(
        model=model,
        checkpointing=checkpointing,
        optimizer=optimizer,
        scheduler=scheduler,
        batches=batches,
        micro_loss=micro_loss,
        flop_parts=_flop_parts(model, recipe, student_layers * student_width, teacher),
        teacher_targets=(
            f"random tensors in the cache dtype ({recipe.teacher_cache.dtype}), real tokens + 1 pad per prompt"
            if cached
            else "online teacher forward (no teacher.cache)"
        ),
        compiled=compiled,
        packing_note=packing_note,
        marked=lambda observer: _bolt_on_marked(model, observer),
    )


def run_training(recipe: Recipe, spec: BenchSpec, lengths: list[int], device: torch.device) -> TrainingResult:
    """The recipe family's training step, timed (see rig.time_rig)."""
    if recipe.family == "logits":
        from recipe_runner.bench.logit_rig import logit_rig

        return time_rig(logit_rig(recipe, spec, lengths, device), recipe, spec, device)
    return time_rig(_hidden_state_rig(recipe, spec, lengths, device), recipe, spec, device)

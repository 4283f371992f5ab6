"""The logits family's training step for `recipe bench`: built as the trainer builds it (LogitsModel, the teacher
online on the same tokens, packing and compile as the hardware profile resolves them), on random token ids
whose lengths follow the shipped distribution. On-policy sampling is not timed.

Across two vocabularies (`alignment`) each side gets its own random ids of the same length, aligned as the
embedding family's benchmark aligns them (4 of 5 tokens matched by position), and the divergences compare the
ids below the smaller vocabulary's size as if all were shared: the most work such a loss can do per pair."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from components.data.pipeline import Collator, DistillBatch
from components.data.texts import TextBatch, TextCollator
from components.losses.cross_vocab import CrossVocabLoss
from components.losses.logit_losses import LogitDistillLoss
from components.losses.vocab_map import VocabMap
from components.models import freeze, hidden_width
from components.models.checkpointing import StudentCheckpointing
from components.models.compilation import compile_for_varied_lengths, compile_wanted
from recipe_runner.bench.flops import FlopPart, Role
from recipe_runner.bench.models import attention_shape, build_random, dense_parameters
from recipe_runner.bench.rig import PhaseObserver, Rig
from recipe_runner.bench.spec import BenchSpec
from recipe_runner.bench.training import batch_indices, synthetic_alignment
from recipe_runner.family_checks import teacher_in_training
from recipe_runner.trainer.denoising import corrupt
from recipe_runner.trainer.logit_parts import LogitsModel, build_projections, needs_vocab_map, teacher_seed
from recipe_runner.trainer.objectives import CrossVocabObjective, token_rows
from recipe_runner.trainer.optim import build_optimizer
from recipe_runner.trainer.packing import choose_packing
from recipe_runner.trainer.parts import set_trained_dtype
from recipe_runner.trainer.stage_setup import enter_stage, parameters_by_part
from schemas import Recipe


def _lm_part(name: str, model: nn.Module, role: Role) -> FlopPart:
    """A causal LM as the FLOP count sees it: its layers, and its LM head, which multiplies activations even when
    it shares the token embedding's weights (which dense_parameters leaves out as a lookup table)."""
    layers, width = attention_shape(model)
    dense = dense_parameters(model)
    head = model.get_output_embeddings().weight
    tied = all(head is not parameter for parameter in dense)
    count = sum(parameter.numel() for parameter in dense) + (head.numel() if tied else 0)
    return FlopPart(name=name, role=role, dense_params=count, attention=layers * width)


def _batches(recipe: Recipe, lengths: list[int], count: int, first_timed: int, vocab: int) -> list[TextBatch]:
    capped = [min(n, recipe.student.max_length) for n in lengths]
    rng = np.random.default_rng(recipe.hardware.seed)
    collate = TextCollator(pad_id=0)
    return [
        collate([{"index": i, "student_ids": rng.integers(0, vocab, capped[i]).tolist()} for i in indices])
        for indices in batch_indices(capped, recipe.hardware, count, first_timed)
    ]


def _pair_batches(
    recipe: Recipe, lengths: list[int], count: int, first_timed: int, vocabs: tuple[int, int]
) -> list[DistillBatch]:
    capped = [min(n, recipe.student.max_length, recipe.teacher.max_length) for n in lengths]
    rng = np.random.default_rng(recipe.hardware.seed)
    collate = Collator(0, 0, False)
    return [
        collate(
            [
                {
                    "index": i,
                    "student_ids": rng.integers(0, vocabs[0], capped[i]),
                    "teacher_ids": rng.integers(0, vocabs[1], capped[i]),
                    "alignment": synthetic_alignment(capped[i]),
                }
                for i in indices
            ]
        )
        for indices in batch_indices(capped, recipe.hardware, count, first_timed)
    ]


def _one_vocab_step(recipe: Recipe, lengths: list[int], forward, student, teacher, count: int, first: int):
    """Batches and the micro-batch loss of one vocabulary: both models read the same ids."""
    stage = recipe.stages[0]
    vocab = min([student.config.vocab_size] + ([teacher.config.vocab_size] if teacher is not None else []))
    loss_fn = LogitDistillLoss(stage.losses, vocab)
    keys = loss_fn.features

    def micro_loss(batch: TextBatch, enter, observer: PhaseObserver | None) -> torch.Tensor:
        if stage.denoising is not None:  # spans masked on the device, as in training
            batch = corrupt(batch, stage.denoising, mask_id=0)
        rows = token_rows(forward, teacher, batch, keys, enter)
        if observer is not None:  # the loss's backward ends where the student's begins
            rows.student.register_hook(lambda grad: observer.enter("student_backward"))
        enter("loss")
        loss, _ = loss_fn(rows.student, rows.teacher, rows.labels, rows.features)
        return loss

    return _batches(recipe, lengths, count, first, vocab), micro_loss


def _cross_vocab_step(recipe: Recipe, lengths: list[int], forward, student, teacher, count: int, first: int):
    """Batches and the micro-batch loss across two vocabularies, through the trainer's objective."""
    stage = recipe.stages[0]
    vocabs = (student.config.vocab_size, teacher.config.vocab_size)
    vocab_map = None
    if needs_vocab_map(recipe):
        ids = torch.arange(min(vocabs), device=next(teacher.parameters()).device)
        vocab_map = VocabMap(ids, ids, *vocabs)
    objective = CrossVocabObjective(CrossVocabLoss(stage.losses, vocabs, vocab_map), teacher)

    def micro_loss(batch: DistillBatch, enter, observer: PhaseObserver | None) -> torch.Tensor:
        def student(*args) -> torch.Tensor:
            logits = forward(*args)
            if observer is not None:  # the loss's backward ends where the student's begins
                logits.register_hook(lambda grad: observer.enter("student_backward"))
            return logits

        return objective.loss.total(*objective.terms(student, batch, enter))

    return _pair_batches(recipe, lengths, count, first, vocabs), micro_loss


def logit_rig(recipe: Recipe, spec: BenchSpec, lengths: list[int], device: torch.device) -> Rig:
    hw, stage = recipe.hardware, recipe.stages[0]
    student = build_random(recipe.student, "student", device, hw.seed, hw.attention, hw.fused_kernels)
    teacher = None
    if teacher_in_training(recipe):
        teacher = freeze(
            build_random(recipe.teacher, "teacher", device, teacher_seed(recipe), hw.attention, hw.fused_kernels)
        )
    projections = build_projections(recipe, hidden_width(student.config))
    bidirectional = getattr(recipe.student, "bidirectional", False)
    model = set_trained_dtype(LogitsModel(student, projections, bidirectional), recipe)
    model.to(device)
    packing_note = choose_packing(model, recipe, device, teacher)
    enter_stage(model, stage, hw.trained_weights)
    total = spec.warmup_steps + spec.timed_steps
    optimizer, scheduler, _ = build_optimizer(stage, parameters_by_part(model), total, device.type, hw.trained_weights)
    compiled = compile_wanted(hw.compile, device.type)
    forward = compile_for_varied_lengths(model) if compiled else model
    count, first = total * hw.grad_accum, spec.warmup_steps * hw.grad_accum
    if recipe.alignment is not None:
        assert teacher is not None  # validate asks for a loss across the vocabularies, which reads it
        batches, micro_loss = _cross_vocab_step(recipe, lengths, forward, student, teacher, count, first)
    else:
        batches, micro_loss = _one_vocab_step(recipe, lengths, forward, student, teacher, count, first)

    # LoRA: the frozen base passes gradients to its adapters (whose own FLOPs are left out: rank << width).
    trains = "student" in stage.trainable
    role: Role = "frozen_forward" if not trains else "frozen_backprop" if stage.student_lora else "trained"
    parts = [_lm_part("student", student, role)]
    projections = sum(p.numel() for p in model.projections.parameters())
    if projections:
        parts.append(FlopPart(name="projections", role="trained", dense_params=projections))
    if teacher is not None:
        parts.append(_lm_part("teacher (online)", teacher, "frozen_forward"))
    targets = "online teacher forward on the same tokens" if teacher is not None else "no teacher (answers only)"
    if recipe.alignment is not None:
        targets = "online teacher forward on its own tokens (random ids, 4 of 5 aligned by position)"
    sampling = [spec.name for spec in recipe.stages if spec.on_policy is not None]
    if sampling:
        targets += f"; on_policy sampling (stage {', '.join(map(repr, sampling))}) is not timed"
    return Rig(
        model=model,
        checkpointing=StudentCheckpointing(student, hw.gradient_checkpointing, hw.checkpoint_min_tokens),
        optimizer=optimizer,
        scheduler=scheduler,
        batches=batches,
        micro_loss=micro_loss,
        flop_parts=parts,
        teacher_targets=targets,
        compiled=compiled,
        packing_note=packing_note,
    )

"""hardware.packed_sequences resolved against the device, the precision and what the models allow."""

from __future__ import annotations

import torch
from torch import nn

from components.bolt_on.stack import packing_problem as bolt_on_packing_problem
from components.models.packed_attention import packing_problem as student_packing_problem
from components.models.packed_attention import use_packed_attention
from components.packed_sequences import flash_head_dim_problem, torch_has_varlen, varlen_available
from recipe_runner.trainer.parts import DistillModel, RunSetupError
from schemas import Recipe
from schemas.bolt_on import TransformerLayer
from schemas.stages import AttentionLoss


def _head_problem(model: nn.Module) -> str | None:
    config = model.config
    return flash_head_dim_problem(getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads)


def _flash_problem(student: nn.Module, recipe: Recipe, teacher: nn.Module | None) -> str | None:
    """Why the flash kernel cannot run these models' heads (None when it can)."""
    problem = _head_problem(student)
    if problem:
        return f"the student has {problem}"
    problem = _head_problem(teacher) if teacher is not None and recipe.family == "logits" else None
    if problem:
        return f"the teacher has {problem}"
    for index, layer in enumerate(recipe.bolt_on.layers):
        problem = flash_head_dim_problem(layer.dim // layer.heads) if isinstance(layer, TransformerLayer) else None
        if problem:
            return f"bolt_on.layers[{index}] has {problem}"
    return None


def _logits_problem(recipe: Recipe, teacher: nn.Module | None) -> str | None:
    """Why a logits recipe cannot run packed, beyond its student (None when it can). The teacher, which runs
    beside the student on the same batches, packs too."""
    if any(stage.on_policy is not None for stage in recipe.stages):
        return "on_policy samples through the student's own attention, which packing replaces"
    if any(isinstance(loss, AttentionLoss) for stage in recipe.stages for loss in stage.losses):
        return "an attention loss reads attention maps, which the packed kernel does not keep"
    problem = student_packing_problem(teacher) if teacher is not None else None
    return f"the teacher: {problem}" if problem else None


def _model_problem(
    student: nn.Module, recipe: Recipe, device: torch.device, teacher: nn.Module | None = None
) -> str | None:
    """Why these models cannot run packed on `device` (None when they can)."""
    problem = student_packing_problem(student) or bolt_on_packing_problem(recipe.bolt_on)
    if recipe.family == "logits":
        problem = problem or _logits_problem(recipe, teacher)
    if device.type == "cuda":
        problem = problem or _flash_problem(student, recipe, teacher)
    return problem


def _flash(recipe: Recipe, device: torch.device) -> bool:
    return varlen_available(device) and recipe.hardware.precision != "fp32"


def packing_refusal(
    student: nn.Module, recipe: Recipe, device: torch.device, teacher: nn.Module | None = None
) -> str | None:
    """Why `packed_sequences: true` cannot be honoured on `device`, to follow the field's name (None when it can, or
    when it is not true).
    `student` (and `teacher`, read by the logits family) may be built on the meta device: only class and config
    are read."""
    if recipe.hardware.packed_sequences is not True:
        return None
    problem = _model_problem(student, recipe, device, teacher)
    if problem:
        return f"is true, but {problem}; set it to auto or false"
    if device.type == "cuda" and not _flash(recipe, device):
        return (
            "is true, but on CUDA it needs precision bf16 or fp16 and a torch with "
            "torch.nn.attention.varlen (2.10 or later); without them every layer would build a T x T mask. "
            "Set it to auto or false"
        )
    return None


def packing_on_cuda(student: nn.Module, recipe: Recipe, teacher: nn.Module | None = None) -> str:
    """What a run of this recipe on CUDA does with hardware.packed_sequences, in words, for `recipe plan` on any
    machine (`student` and `teacher` may be on the meta device)."""
    hw = recipe.hardware
    if hw.packed_sequences is False:
        return "padded batches (hardware.packed_sequences: false)"
    if hw.precision == "fp32":
        return "padded batches (precision fp32: the packed kernel needs bf16 or fp16)"
    problem = _model_problem(student, recipe, torch.device("cuda"), teacher)
    if problem:
        return f"padded batches, since {problem}"
    if torch_has_varlen():
        return "packed sequences (flash-attention varlen)"
    return (
        "packed sequences where torch has torch.nn.attention.varlen (2.10 or later; the one here has not), "
        "padded batches elsewhere"
    )


def choose_packing(
    model: DistillModel, recipe: Recipe, device: torch.device, teacher: nn.Module | None = None
) -> str | None:
    """Switch `model` (and a logits recipe's `teacher`, which reads the same batches) to packed sequences when the
    recipe asks for them (explicitly, or `auto` where the flash kernel runs). Returns a line for the run's log when
    it packs, or when `auto` stays padded on CUDA for a reason the user may want to know; raises RunSetupError when
    `true` cannot be honoured."""
    hw = recipe.hardware
    if hw.packed_sequences is False:
        return None
    flash = _flash(recipe, device)
    if hw.packed_sequences == "auto":
        if device.type != "cuda":
            return None
        if not flash:
            why = "precision fp32" if hw.precision == "fp32" else "this torch has no torch.nn.attention.varlen"
            return f"hardware.packed_sequences auto: padded batches ({why}; the packed kernel needs bf16 or fp16)"
        problem = _model_problem(model.student, recipe, device, teacher)
        if problem:
            return f"hardware.packed_sequences auto: padded batches, since {problem}"
    else:
        refusal = packing_refusal(model.student, recipe, device, teacher)
        if refusal:
            raise RunSetupError(f"hardware.packed_sequences {refusal}")
    model.use_packed_sequences()
    packed = "student and bolt-on train"
    if recipe.family == "logits":
        packed = "student and teacher run"
        if teacher is not None:
            use_packed_attention(teacher)
    if flash:
        return f"packed sequences: {packed} on real tokens only (flash-attention varlen)"
    return "packed sequences without a flash kernel: a T x T attention mask per layer, for checking only (slow)"

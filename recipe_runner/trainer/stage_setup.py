"""Per-stage switches: which parts train, and LoRA adapters wrapped on entry and merged on exit."""

from __future__ import annotations

import warnings

import torch

from components.models.checkpointing import without_input_grad_hook
from recipe_runner.trainer.parts import DistillModel, trained_dtype
from schemas.hardware import TrainedWeights
from schemas.stages import Part, Stage


def parameters_by_part(model: DistillModel) -> dict[Part, list[torch.nn.Parameter]]:
    student = [parameter for module in model.student_side() for parameter in module.parameters()]
    return {"student": student, "bolt_on": list(model.bolt_on.parameters())}


def enter_stage(model: DistillModel, stage: Stage, trained_weights: TrainedWeights) -> None:
    """Freeze what the stage does not train; a LoRA stage trains only the student's adapters, which take the
    dtype of `trained_weights` (float32 masters over bf16 weights, or bf16 for bf16_stochastic)."""
    model.bolt_on.requires_grad_("bolt_on" in stage.trainable)
    model.train_extras(stage)  # what trains beside the student's own weights, LoRA or not
    model.student.requires_grad_("student" in stage.trainable and stage.student_lora is None)
    if stage.student_lora is not None:
        from peft import LoraConfig, get_peft_model

        from components.models.lora import fans_in_first

        lora = stage.student_lora
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            fan_in_fan_out=fans_in_first(model.student, lora),  # GPT-2's Conv1D stores weights as (in, out)
        )
        with warnings.catch_warnings():
            # peft asks transformers for a property transformers has deprecated; the notice is about library
            # internals and no recipe setting can silence it, so it is kept out of every LoRA run's output.
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
            model.student = get_peft_model(model.student, config, autocast_adapter_dtype=False)
        without_input_grad_hook(model.student)  # peft adds it back to a checkpointed model
        dtype = trained_dtype(trained_weights)
        for parameter in model.student.parameters():
            if parameter.requires_grad:  # the adapters: peft freezes everything else
                parameter.data = parameter.data.to(dtype)


def leave_stage(model: DistillModel, stage: Stage) -> None:
    """Merge adapters into the student so later stages and the export see plain weights."""
    if stage.student_lora is not None:
        model.student = model.student.merge_and_unload()

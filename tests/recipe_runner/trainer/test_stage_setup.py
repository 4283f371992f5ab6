"""Entering and leaving a stage: what trains, and LoRA wrapped on entry and merged on exit."""

from __future__ import annotations

import warnings

import torch

from components.models import hidden_width, resolve_config
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.parts import build_distill_model, set_trained_dtype
from recipe_runner.trainer.stage_setup import enter_stage, leave_stage
from recipe_runner.trainer.stochastic_adamw import StochasticRoundingAdamW

LORA = "stages.0.student_lora={r: 4, target_modules: [q_proj, v_proj]}"


def _model_and_stage(recipe_path, tmp_path, *extra: str):
    recipe = load_recipe(recipe_path, [f"output.dir={tmp_path}", *extra]).recipe
    model = build_distill_model(recipe, "cpu", hidden_width(resolve_config(recipe.teacher)))
    return model, recipe.stages[0]


def test_a_lora_stage_trains_only_adapters_and_bolt_on_and_merges_back(tiny_recipe_path, tmp_path):
    model, stage = _model_and_stage(tiny_recipe_path, tmp_path, LORA)
    plain_names = {name for name, _ in model.student.named_parameters()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        enter_stage(model, stage)
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    trained = {name for name, p in model.student.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name for name in trained)
    assert all(p.requires_grad for p in model.bolt_on.parameters())
    leave_stage(model, stage)
    assert {name for name, _ in model.student.named_parameters()} == plain_names


def test_a_stage_without_the_student_freezes_it(tiny_recipe_path, tmp_path):
    model, stage = _model_and_stage(tiny_recipe_path, tmp_path, "stages.0.trainable=[bolt_on]")
    enter_stage(model, stage)
    assert not any(p.requires_grad for p in model.student.parameters())
    assert all(p.requires_grad for p in model.bolt_on.parameters())


def test_lora_adapters_take_the_trained_dtype_so_bf16_stochastic_can_update_them(tiny_recipe_path, tmp_path):
    # peft's default made float32 adapters over bf16 weights; the bf16 optimizer then stopped with a TypeError.
    bf16 = ["hardware.precision=bf16", "hardware.trained_weights=bf16_stochastic"]
    model, stage = _model_and_stage(tiny_recipe_path, tmp_path, LORA, *bf16)
    recipe = load_recipe(tiny_recipe_path, [f"output.dir={tmp_path}", LORA, *bf16]).recipe
    set_trained_dtype(model, recipe)
    enter_stage(model, stage)
    adapters = [p for name, p in model.student.named_parameters() if "lora_" in name]
    assert adapters and {p.dtype for p in adapters} == {torch.bfloat16}
    for param in adapters:
        param.grad = torch.ones_like(param)
    before = [p.detach().clone() for p in adapters]
    StochasticRoundingAdamW(adapters, lr=0.1).step()
    assert all(not torch.equal(p, b) for p, b in zip(adapters, before, strict=True))

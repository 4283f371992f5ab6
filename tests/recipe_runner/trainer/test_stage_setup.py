"""Entering and leaving a stage: what trains, and LoRA wrapped on entry and merged on exit."""

from __future__ import annotations

import warnings

import torch

from components.models import hidden_width, resolve_config
from components.models.checkpointing import StudentCheckpointing
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
        enter_stage(model, stage, "fp32")
    assert not [w for w in caught if issubclass(w.category, FutureWarning)], [str(w.message) for w in caught]
    trained = {name for name, p in model.student.named_parameters() if p.requires_grad}
    assert trained and all("lora_" in name for name in trained)
    assert all(p.requires_grad for p in model.bolt_on.parameters())
    leave_stage(model, stage)
    assert {name for name, _ in model.student.named_parameters()} == plain_names


def test_a_stage_without_the_student_freezes_it_and_keeps_its_dropout_off(tiny_recipe_path, tmp_path):
    dropout = "student.config.attention_dropout=0.5"
    model, stage = _model_and_stage(tiny_recipe_path, tmp_path, "stages.0.trainable=[bolt_on]", dropout)
    enter_stage(model, stage, "fp32")
    assert not any(p.requires_grad for p in model.student.parameters())
    assert all(p.requires_grad for p in model.bolt_on.parameters())
    model.train()  # as a stage starts and after each evaluation
    assert not model.student.training and model.bolt_on.training
    ids = torch.randint(0, 2000, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids, dtype=torch.bool)
    torch.testing.assert_close(model(ids, mask), model(ids, mask))  # the same features every time
    trained, _ = _model_and_stage(tiny_recipe_path, tmp_path, dropout)
    enter_stage(trained, stage.model_copy(update={"trainable": ["student", "bolt_on"]}), "fp32")
    assert trained.train().student.training


def _checkpointed_batch(model) -> tuple[StudentCheckpointing, torch.Tensor, torch.Tensor]:
    checkpointing = StudentCheckpointing(model.student, enabled=True, min_tokens=10)  # as build_parts makes it
    ids = torch.randint(0, 2000, (2, 9), generator=torch.Generator().manual_seed(0))
    return checkpointing, ids, torch.ones_like(ids, dtype=torch.bool)


def test_a_frozen_student_under_checkpointing_is_not_recorded_for_a_backward(tiny_recipe_path, tmp_path):
    """transformers makes the embeddings' output require grad when checkpointing is switched on: every frozen
    layer was then recorded, recomputed and differentiated for no gradient."""
    model, stage = _model_and_stage(tiny_recipe_path, tmp_path, "stages.0.trainable=[bolt_on]")
    checkpointing, ids, mask = _checkpointed_batch(model)
    enter_stage(model, stage, "fp32")
    model.train()
    assert not checkpointing.for_batch(ids.numel())  # nothing to recompute: the bench says so
    assert not model.student(input_ids=ids, attention_mask=mask.long()).last_hidden_state.requires_grad
    model(ids, mask).square().mean().backward()
    assert all(p.grad is not None for p in model.bolt_on.parameters())


def test_lora_adapters_get_the_same_gradients_recomputed_or_not(tiny_recipe_path, tmp_path):
    """peft puts the embeddings' hook back on a checkpointed student; without it the adapters still learn."""
    model, stage = _model_and_stage(tiny_recipe_path, tmp_path, LORA)
    checkpointing, ids, mask = _checkpointed_batch(model)
    enter_stage(model, stage, "fp32")
    model.train()
    assert not model.student.get_input_embeddings()(ids).requires_grad
    adapters = [p for name, p in model.student.named_parameters() if "lora_" in name]
    grads = []
    for padded_tokens in (ids.numel(), 1):  # recomputed, then kept
        checkpointing.for_batch(padded_tokens)
        model.zero_grad(set_to_none=True)
        model(ids, mask).square().mean().backward()
        grads.append([p.grad.clone() for p in adapters])
    assert any(g.abs().sum() > 0 for g in grads[0])
    for recomputed, kept in zip(*grads, strict=True):
        torch.testing.assert_close(recomputed, kept)


def test_lora_adapters_take_the_trained_dtype_so_bf16_stochastic_can_update_them(tiny_recipe_path, tmp_path):
    # peft's default made float32 adapters over bf16 weights; the bf16 optimizer then stopped with a TypeError.
    bf16 = ["hardware.precision=bf16", "hardware.trained_weights=bf16_stochastic"]
    model, stage = _model_and_stage(tiny_recipe_path, tmp_path, LORA, *bf16)
    recipe = load_recipe(tiny_recipe_path, [f"output.dir={tmp_path}", LORA, *bf16]).recipe
    set_trained_dtype(model, recipe)
    enter_stage(model, stage, "bf16_stochastic")
    adapters = [p for name, p in model.student.named_parameters() if "lora_" in name]
    assert adapters and {p.dtype for p in adapters} == {torch.bfloat16}
    for param in adapters:
        param.grad = torch.ones_like(param)
    before = [p.detach().clone() for p in adapters]
    StochasticRoundingAdamW(adapters, lr=0.1).step()
    assert all(not torch.equal(p, b) for p, b in zip(adapters, before, strict=True))


def test_a_student_trained_only_through_lora_keeps_its_bf16_weights_under_float32_adapters(tiny_recipe_path, tmp_path):
    """Its weights never change, so float32 masters of them would only double their memory."""
    bf16 = ["student.dtype=bfloat16", "hardware.precision=bf16"]
    recipe = load_recipe(tiny_recipe_path, [f"output.dir={tmp_path}", LORA, *bf16]).recipe
    model = set_trained_dtype(build_distill_model(recipe, "cpu", hidden_width(resolve_config(recipe.teacher))), recipe)
    assert {p.dtype for p in model.student.parameters()} == {torch.bfloat16}
    enter_stage(model, recipe.stages[0], "fp32")
    dtypes = {name: p.dtype for name, p in model.student.named_parameters()}
    assert {d for name, d in dtypes.items() if "lora_" in name} == {torch.float32}
    assert {d for name, d in dtypes.items() if "lora_" not in name} == {torch.bfloat16}
    leave_stage(model, recipe.stages[0])
    assert {p.dtype for p in model.student.parameters()} == {torch.bfloat16}
    full = load_recipe(tiny_recipe_path, [f"output.dir={tmp_path}", *bf16]).recipe
    fully = set_trained_dtype(build_distill_model(full, "cpu", hidden_width(resolve_config(full.teacher))), full)
    assert {p.dtype for p in fully.student.parameters()} == {torch.float32}  # updated weights get masters


def test_float32_layers_read_a_bf16_student_without_autocast(tiny_recipe_path, tmp_path):
    """precision fp32 runs no autocast: the bolt-on and the feature projections take the student's bf16 states."""
    from recipe_runner.trainer.logit_parts import build_logits_model

    ids, mask = torch.tensor([[5, 6, 7, 8]]), torch.ones(1, 4, dtype=torch.bool)
    bolt_on_only = [f"output.dir={tmp_path}", "student.dtype=bfloat16", "stages.0.trainable=[bolt_on]"]
    recipe = load_recipe(tiny_recipe_path, bolt_on_only).recipe
    model = set_trained_dtype(build_distill_model(recipe, "cpu", hidden_width(resolve_config(recipe.teacher))), recipe)
    assert model(ids, mask).dtype == torch.float32
    logits_recipe = tiny_recipe_path.with_name("qwen_logits_tiny.yaml")
    features = "stages.0.losses=[{type: forward_kl}, {type: hidden_states, layers: {1: 2}}]"
    recipe = load_recipe(logits_recipe, [f"output.dir={tmp_path}", "student.dtype=bfloat16", LORA, features]).recipe
    model = build_logits_model(recipe, "cpu")
    enter_stage(model, recipe.stages[0], "fp32")
    _, (projected,) = model(ids, mask, (("hidden", 1, 2),))
    assert projected.dtype == torch.float32 and projected.shape == (4, 64)

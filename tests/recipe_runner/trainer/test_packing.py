"""Packed sequences in training: the same outputs and gradients as padded batches, and when they are used."""

from __future__ import annotations

import pytest
import torch

from components.packed_sequences import PackedSequences
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.packing import choose_packing
from recipe_runner.trainer.parts import RunSetupError, build_distill_model

TEACHER_WIDTH = 64  # the tiny recipe's T5 d_model


def _recipe(tiny_recipe_path, tiny_overrides, *sets: str):
    """Without the semantic checks: `recipe validate` refuses what these tests give to run setup on purpose."""
    return load_recipe(tiny_recipe_path, [*tiny_overrides, *sets], check=False).recipe


def _batch(lengths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    mask = torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]
    return torch.randint(5, 2000, mask.shape), mask


def _outputs_and_grads(model, ids, mask, packing=None):
    model.zero_grad()
    out = model(ids, mask, packing)
    out[mask].pow(2).mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out, grads


@pytest.mark.parametrize("layer", [-1, 1])
def test_packed_forward_and_backward_match_the_padded_ones(tiny_recipe_path, tiny_overrides, layer):
    """Student (causal, grouped-query, RoPE at padded positions) and bolt-on (bidirectional transformer with
    sinusoidal positions) in float32 on a CPU: the packed path computes the same function."""
    recipe = _recipe(tiny_recipe_path, tiny_overrides, f"student.layer={layer}")
    torch.manual_seed(0)
    model = build_distill_model(recipe, "cpu", TEACHER_WIDTH).eval()
    ids, mask = _batch([7, 3, 11, 1])
    padded_out, padded_grads = _outputs_and_grads(model, ids, mask)
    model.use_packed_sequences()
    packed_out, packed_grads = _outputs_and_grads(model, ids, mask, PackedSequences.from_mask(mask))
    assert torch.allclose(packed_out[mask], padded_out[mask], atol=1e-5)
    assert not packed_out[~mask].any()
    assert padded_grads.keys() == packed_grads.keys() and len(packed_grads) > 20
    for name, grad in padded_grads.items():
        assert torch.allclose(packed_grads[name], grad, atol=1e-5, rtol=1e-4), name


def test_without_the_collators_layout_the_model_packs_from_the_mask(tiny_recipe_path, tiny_overrides):
    recipe = _recipe(tiny_recipe_path, tiny_overrides)
    model = build_distill_model(recipe, "cpu", TEACHER_WIDTH).eval()
    model.use_packed_sequences()
    ids, mask = _batch([4, 2])
    with torch.no_grad():
        assert torch.equal(model(ids, mask), model(ids, mask, PackedSequences.from_mask(mask)))


def test_the_packed_attention_name_is_not_written_into_an_export(tiny_recipe_path, tiny_overrides, tmp_path):
    model = build_distill_model(_recipe(tiny_recipe_path, tiny_overrides), "cpu", TEACHER_WIDTH)
    model.use_packed_sequences()
    model.student.save_pretrained(tmp_path)
    assert "recipe_packed" not in (tmp_path / "config.json").read_text()


@pytest.mark.parametrize(
    ("setting", "device", "packed"), [("auto", "cpu", False), (False, "cpu", False), (True, "cpu", True)]
)
def test_auto_packs_only_on_cuda_and_true_packs_anywhere(tiny_recipe_path, tiny_overrides, setting, device, packed):
    recipe = _recipe(tiny_recipe_path, tiny_overrides, f"hardware.packed_sequences={str(setting).lower()}")
    model = build_distill_model(recipe, "cpu", TEACHER_WIDTH)
    note = choose_packing(model, recipe, torch.device(device))
    assert model.packed is packed
    assert (note is not None and "for checking only" in note) if packed else note is None


def test_true_with_attention_dropout_in_the_bolt_on_names_the_layer(tiny_recipe_path, tiny_overrides):
    recipe = _recipe(tiny_recipe_path, tiny_overrides, "hardware.packed_sequences=true", "bolt_on.layers.2.dropout=0.1")
    model = build_distill_model(recipe, "cpu", TEACHER_WIDTH)
    refusal = r"hardware.packed_sequences is true, but bolt_on.layers\[2\] has attention dropout \(0.1\)"
    with pytest.raises(RunSetupError, match=refusal):
        choose_packing(model, recipe, torch.device("cpu"))
    assert not model.packed


def test_true_on_cuda_in_fp32_is_refused_before_any_step(tiny_recipe_path, tiny_overrides):
    sets = ("hardware.packed_sequences=true", "hardware.precision=fp32", "student.config.head_dim=16")
    recipe = _recipe(tiny_recipe_path, tiny_overrides, *sets)
    model = build_distill_model(recipe, "cpu", TEACHER_WIDTH)
    with pytest.raises(RunSetupError, match="needs precision bf16 or fp16"):
        choose_packing(model, recipe, torch.device("cuda"))


def test_a_student_with_attention_dropout_stays_padded_under_auto_with_a_note(
    tiny_recipe_path, tiny_overrides, monkeypatch
):
    recipe = _recipe(tiny_recipe_path, tiny_overrides, "hardware.precision=bf16", "student.config.head_dim=16")
    model = build_distill_model(recipe, "cpu", TEACHER_WIDTH)
    model.student.config.attention_dropout = 0.1
    monkeypatch.setattr("recipe_runner.trainer.packing.varlen_available", lambda device: True)
    note = choose_packing(model, recipe, torch.device("cuda"))
    assert note is not None and "attention dropout (0.1)" in note and "padded batches" in note
    assert not model.packed


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the flash varlen kernel needs CUDA")
def test_on_cuda_packed_bf16_matches_padded_within_bf16_rounding(tiny_recipe_path, tiny_overrides):
    recipe = _recipe(tiny_recipe_path, tiny_overrides, "hardware.precision=bf16", "student.config.head_dim=16")
    torch.manual_seed(0)
    model = build_distill_model(recipe, "cuda", TEACHER_WIDTH).eval()
    ids, mask = (t.cuda() for t in _batch([37, 5, 64, 1, 20]))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        padded_out, _ = _outputs_and_grads(model, ids, mask)
        assert "flash-attention varlen" in choose_packing(model, recipe, torch.device("cuda")) and model.packed
        packed_out, _ = _outputs_and_grads(model, ids, mask, PackedSequences.from_mask(mask.cpu()).to("cuda"))
    error = (packed_out[mask].float() - padded_out[mask].float()).norm() / padded_out[mask].float().norm()
    assert error < 1e-2, float(error)


def test_on_cuda_a_head_width_flash_cannot_take_keeps_auto_padded(tiny_recipe_path, tiny_overrides, monkeypatch):
    """The tiny student's heads are 12 wide: flash attention needs a multiple of 8."""
    recipe = _recipe(tiny_recipe_path, tiny_overrides, "hardware.precision=bf16")
    model = build_distill_model(recipe, "cpu", TEACHER_WIDTH)
    monkeypatch.setattr("recipe_runner.trainer.packing.varlen_available", lambda device: True)
    note = choose_packing(model, recipe, torch.device("cuda"))
    assert note is not None and "the student has head width 12" in note and not model.packed
    explicit = _recipe(tiny_recipe_path, tiny_overrides, "hardware.precision=bf16", "hardware.packed_sequences=true")
    with pytest.raises(RunSetupError, match="head width 12"):
        choose_packing(model, explicit, torch.device("cuda"))


def test_a_lora_student_runs_packed_with_the_padded_results(tiny_recipe_path, tiny_overrides):
    """peft's wrapper passes the packed layout through to the base model's attention."""
    from recipe_runner.trainer.stage_setup import enter_stage

    recipe = _recipe(tiny_recipe_path, tiny_overrides, "stages.0.student_lora={r: 4, alpha: 8}")
    torch.manual_seed(0)
    model = build_distill_model(recipe, "cpu", TEACHER_WIDTH).eval()
    enter_stage(model, recipe.stages[0], recipe.hardware.trained_weights)
    ids, mask = _batch([6, 2, 9])
    padded_out, padded_grads = _outputs_and_grads(model, ids, mask)
    model.use_packed_sequences()
    packed_out, packed_grads = _outputs_and_grads(model, ids, mask, PackedSequences.from_mask(mask))
    assert torch.allclose(packed_out[mask], padded_out[mask], atol=1e-5)
    assert any("lora" in name for name in packed_grads)
    for name, grad in padded_grads.items():
        assert torch.allclose(packed_grads[name], grad, atol=1e-5, rtol=1e-4), name

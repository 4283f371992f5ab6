"""Bolt-on stack: widths chain student -> teacher, the reference size, skip path, teacher-norm init."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.bolt_on import BoltOnWidthError, build_bolt_on, width_chain, width_problems
from recipe_runner.loader import load_recipe
from schemas.bolt_on import BoltOn

REFERENCE = Path(__file__).parents[3] / "recipes" / "t5_to_qwen.yaml"


def spec(*layers: dict[str, object], skip: float | None = None) -> BoltOn:
    return BoltOn.model_validate({"layers": list(layers), "skip": None if skip is None else {"scale": skip}})


TINY = spec(
    {"type": "linear", "out_dim": 12, "activation": "gelu", "layer_norm": True, "dropout": 0.1},
    {"type": "mlp", "hidden_dims": [20, 16], "out_dim": 16, "activation": "silu", "layer_norm": True, "residual": True},
    {"type": "transformer", "layers": 1, "dim": 16, "heads": 4, "ffn_dim": 32, "max_positions": 8},
    {"type": "residual_mlp", "hidden_dim": 24},
    {"type": "mlp", "hidden_dims": [24], "out_dim": 10},
    {"type": "rms_norm", "init_from": "teacher.final_norm"},
    skip=0.1,
)


def test_reference_stack_widths_and_size() -> None:
    bolt_on = load_recipe(REFERENCE, check=False).recipe.bolt_on
    chain = [(w.in_width, w.out_width) for w in width_chain(bolt_on, 1024)]
    assert chain == [(1024, 2048), (2048, 3072), (3072, 3072), (3072, 3072), (3072, 4096), (4096, 4096)]
    assert width_problems(bolt_on, 1024, 4096) == []
    with torch.device("meta"):
        stack = build_bolt_on(bolt_on, 1024, 4096)
    assert sum(p.numel() for p in stack.parameters()) == 410_213_376  # "about 0.40B" in DESIGN.md


def test_forward_shape_and_bool_mask_only() -> None:
    stack = build_bolt_on(TINY, 8, 10)
    hidden, mask = torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    assert stack(hidden, mask).shape == (2, 5, 10)
    with pytest.raises(TypeError, match="bool"):
        stack(hidden, mask.float())


def test_skip_path_adds_a_scaled_projection() -> None:
    stack = build_bolt_on(TINY, 8, 10).eval()
    hidden, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    with torch.no_grad():
        with_skip = stack(hidden, mask)
        stack.skip_scale = 0.0
        without = stack(hidden, mask)
    torch.testing.assert_close(with_skip - without, 0.1 * stack.skip(hidden))


def test_mlp_residual_uses_a_bias_free_projection_when_widths_differ() -> None:
    stack = build_bolt_on(TINY, 8, 10)
    mlp = stack.layers[1]
    assert mlp.shortcut.bias is None and tuple(mlp.shortcut.weight.shape) == (16, 12)
    same_width = build_bolt_on(spec({"type": "mlp", "hidden_dims": [4], "out_dim": 6, "residual": True}), 6, 6)
    assert isinstance(same_width.layers[0].shortcut, torch.nn.Identity)


def test_width_problems_are_all_reported_at_once() -> None:
    wrong = spec(
        {"type": "linear", "out_dim": 12},
        {"type": "transformer", "layers": 1, "dim": 16, "heads": 5, "ffn_dim": 32},
        {"type": "rms_norm", "init_from": "teacher.final_norm"},
    )
    assert [(p.index, p.field) for p in width_problems(wrong, 8, 10)] == [
        (1, "dim"),
        (1, "heads"),
        (2, "init_from"),
        (None, None),
    ]
    with pytest.raises(BoltOnWidthError, match=r"bolt_on.layers\[1\].dim: transformer dim 16 must equal"):
        build_bolt_on(wrong, 8, 10)
    assert [p.index for p in width_problems(BoltOn(), 8, 8)] == []
    assert "student width 8" in width_problems(BoltOn(), 8, 10)[0].message


def test_init_from_teacher_copies_the_final_norm_weight() -> None:
    teacher = torch.nn.Module()
    teacher.norm = torch.nn.Module()
    teacher.norm.weight = torch.nn.Parameter(torch.linspace(0.5, 1.5, 10))
    stack = build_bolt_on(TINY, 8, 10)
    assert stack.init_from_teacher(teacher) == 1
    torch.testing.assert_close(stack.layers[-1].weight.detach(), teacher.norm.weight.detach())
    teacher.norm.weight = torch.nn.Parameter(torch.ones(11))
    with pytest.raises(ValueError, match="does not match"):
        stack.init_from_teacher(teacher)


def test_rms_norm_matches_t5_layer_norm() -> None:
    from transformers.models.t5.modeling_t5 import T5LayerNorm

    reference = T5LayerNorm(10, eps=1e-6)
    reference.weight.data = torch.linspace(0.5, 1.5, 10)
    stack = build_bolt_on(spec({"type": "rms_norm", "init_from": "teacher.final_norm"}), 10, 10)
    stack.layers[0].copy_weight(reference.weight)
    hidden = torch.randn(2, 3, 10)
    torch.testing.assert_close(stack(hidden, torch.ones(2, 3, dtype=torch.bool)), reference(hidden))

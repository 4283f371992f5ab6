"""Regional compilation of student + bolt-on: same numbers as eager, any sequence length."""

from __future__ import annotations

import pytest
import torch

from components.models.compilation import compile_for_varied_lengths
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.parts import build_distill_model

pytestmark = pytest.mark.slow


def test_compiled_model_matches_eager_on_changing_lengths(tiny_recipe_path, tiny_overrides):
    recipe = load_recipe(tiny_recipe_path, tiny_overrides).recipe
    model = build_distill_model(recipe, "cpu", teacher_width=64).eval()
    compiled = compile_for_varied_lengths(model)
    assert model.student.config.use_cache is False  # no KV cache built in a training forward
    generator = torch.Generator().manual_seed(0)
    for length in (7, 13, 29):
        ids = torch.randint(0, 500, (2, length), generator=generator)
        mask = torch.ones_like(ids, dtype=torch.bool)
        mask[1, length // 2 :] = False
        with torch.no_grad():
            eager, fast = model(ids, mask), compiled(ids, mask)
        torch.testing.assert_close(fast, eager, rtol=1e-4, atol=1e-4)
    assert sum(p.numel() for p in compiled.parameters()) == sum(p.numel() for p in model.parameters())

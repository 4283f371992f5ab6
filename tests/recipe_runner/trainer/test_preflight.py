"""A LoRA stage that cannot start is refused before any model loads, not when the run reaches it hours later.

`recipe validate` (and so every verb) reports it with its file:line (tests/recipe_runner/test_errors_golden.py);
here the recipe is loaded unchecked, as a program building a Trainer may do, and the run still refuses it."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipe_runner.loader import load_recipe
from recipe_runner.plan import build_plan, format_plan
from recipe_runner.trainer import loop
from recipe_runner.trainer.loop import Trainer
from recipe_runner.trainer.parts import RunSetupError

TWO_STAGES = Path(__file__).parents[2] / "assets" / "recipes" / "two_stage_tiny.yaml"


@pytest.mark.parametrize(
    ("targets", "problem"),
    [
        ("[query]", "student_lora.target_modules: 'query' matches no module of Qwen3Model"),
        ("[input_layernorm]", "is a Qwen3RMSNorm; only Linear, Conv1D and Embedding are adapted"),
    ],
)
def test_a_lora_stage_that_cannot_start_is_refused_before_loading(tmp_path, monkeypatch, targets, problem):
    overrides = [f"output.dir={tmp_path / 'run'}", f"stages.1.student_lora.target_modules={targets}"]
    recipe = load_recipe(TWO_STAGES, overrides, check=False).recipe
    plan = build_plan(recipe)  # the plan says it as a warning, sizes the disk regardless, and does not crash
    assert any(problem in warning for warning in plan.warnings)
    assert "warning: stage 'student_lora': student_lora" in format_plan(plan)

    def no_loading(*args, **kwargs):
        raise AssertionError("models were loaded for a run that cannot reach its second stage")

    monkeypatch.setattr(loop, "build_parts", no_loading)
    with pytest.raises(RunSetupError, match="the stage would fail as it starts") as caught:
        Trainer(recipe, progress=False)
    assert problem in str(caught.value) and "stage 'student_lora'" in str(caught.value)

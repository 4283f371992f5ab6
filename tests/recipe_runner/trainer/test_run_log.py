"""The run directory's record of which recipe trained which steps."""

from __future__ import annotations

from recipe_runner.loader import load_recipe
from recipe_runner.trainer.run_log import write_run_info


def test_a_second_resume_from_the_same_step_keeps_the_recipe_that_trained_up_to_it(
    tiny_recipe_path, tiny_overrides, tmp_path
):
    def recipe(lr: str):
        return load_recipe(tiny_recipe_path, [*tiny_overrides, f"stages.0.lr.student={lr}"]).recipe

    write_run_info(tmp_path, recipe("1e-3"))  # trained steps 1-4, checkpoint at 4
    write_run_info(tmp_path, recipe("5e-4"), resumed_at=4)  # stopped before it saved anything
    write_run_info(tmp_path, recipe("2e-4"), resumed_at=4)
    assert "student: 0.001" in (tmp_path / "resolved_recipe.until-step-00000004.yaml").read_text()
    assert "student: 0.0002" in (tmp_path / "resolved_recipe.yaml").read_text()
    assert sorted(p.name for p in tmp_path.glob("resolved_recipe*")) == [
        "resolved_recipe.until-step-00000004.yaml",
        "resolved_recipe.yaml",
    ]

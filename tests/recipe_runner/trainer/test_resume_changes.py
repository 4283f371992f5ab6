"""What a resume says of the recipe values and launch that changed since its checkpoint (no training here: the
checkpoint's record is the recipe as it was)."""

from __future__ import annotations

from pathlib import Path

from recipe_runner.loader import load_recipe
from recipe_runner.trainer.resume import compare, describe_changes


def test_every_change_is_listed_and_those_to_finished_stages_are_said_to_have_no_effect():
    gkd = Path(__file__).parents[3] / "recipes" / "examples" / "qwen_gkd_tiny.yaml"
    saved = {"recipe": load_recipe(gkd).recipe.model_dump(mode="json")}
    sets = [f"stages.{stage}.lr.student={rate}" for stage in (0, 1) for rate in (1e-5,)]
    sets += [f"hardware.{name}={value}" for name, value in (("batch_size", 3), ("grad_accum", 2), ("seed", 0))]
    sets += ["output.log_every_steps=3", "output.eval_every_steps=7", "output.keep_last=4", "hardware.num_workers=1"]
    report = compare(saved, load_recipe(gkd, sets).recipe, "sha", stage_index=1)
    line = describe_changes(report)
    assert len(report.changes) > 8 and all(change in line for change in report.changes)  # none cut off
    assert "stages.0.lr.student: 0.003 -> 1e-05 (stage 0 is finished: no effect on this run)" in line
    assert "stages.1.lr.student: 0.001 -> 1e-05;" in line  # the stage resumed: it applies
    launched = compare({**saved, "processes": 2}, load_recipe(gkd).recipe, "sha", stage_index=1, processes=1)
    batch = load_recipe(gkd).recipe.hardware.batch_size
    assert launched.changes == [f"processes: 2 -> 1 (an optimizer step takes up to {2 * batch} -> {batch} prompts)"]

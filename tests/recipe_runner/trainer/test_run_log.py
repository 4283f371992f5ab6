"""The run directory's record of which recipe trained which steps."""

from __future__ import annotations

import json

import pytest
from short_runs import constant_run

from recipe_runner.loader import load_recipe
from recipe_runner.trainer.loop import Trainer
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


def test_a_resumed_log_drops_the_steps_trained_again_and_its_time_runs_on(tmp_path):
    import json

    from recipe_runner.trainer.run_log import MetricsLog

    rows = [{"step": 1, "time": 5.0, "loss": 3.0}, {"step": 2, "time": 10.0, "loss": 2.0}, {"step": 3, "time": 15.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows) + '{"step": 4, "ti')
    log = MetricsLog(tmp_path, enabled=True, resume_step=2)
    log.write(3, {"loss": 1.5})
    log.close()
    written = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in written] == [1, 2, 3]  # the old step 3 and the torn line are gone
    assert 10.0 <= written[-1]["time"] < 20.0, written[-1]  # after the kept step 2's, not from 0 again


def test_a_resume_from_the_checkpoint_ending_a_stage_drops_the_next_stages_opening_evaluation(tmp_path):
    """Logged at the same step as that checkpoint but after it, the resumed run logs it again: it was there twice."""
    import json

    from recipe_runner.trainer.run_log import MetricsLog

    rows = [
        {"step": 4, "stage": "bolt_on", "loss": 2.0},
        {"step": 4, "stage": "bolt_on", "eval/loss": 1.9},
        {"step": 4, "stage": "joint", "eval/loss": 1.9},  # the next stage opens with an evaluation of its own
        {"step": 5, "stage": "joint", "loss": 1.5},
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    log = MetricsLog(tmp_path, enabled=True, resume_step=4, resume_stage="bolt_on")
    log.write(4, {"stage": "joint", "eval/loss": 1.9})
    log.close()
    written = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [(row["step"], row["stage"]) for row in written] == [(4, "bolt_on"), (4, "bolt_on"), (4, "joint")]


def test_each_logged_rate_is_the_one_its_step_trained_with(tiny_recipe_path, tiny_overrides, tmp_path):
    """The scheduler steps inside a step, so its last rate afterwards is the next step's: a decay logged from
    there never showed its peak, and a warmup showed the peak one step early."""
    sets = constant_run(tiny_overrides, 4, "stages.0.schedule={type: linear}", "stages.0.warmup_steps=2")
    Trainer(load_recipe(tiny_recipe_path, sets).recipe, progress=False).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    lrs = [row["lr/student"] for row in rows if "lr/student" in row]
    # Two warmup steps at 1/3 and 2/3 of the peak, the peak, then halfway down to min_lr (1e-4).
    assert lrs == pytest.approx([1e-3 / 3, 2e-3 / 3, 1e-3, 0.55e-3], rel=1e-6)

"""Checkpoints by the clock: due after the set minutes, asked after every step of one process, off when null."""

from __future__ import annotations

import pytest

import recipe_runner.trainer.save_clock as save_clock
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.checkpoint import step_checkpoints
from recipe_runner.trainer.loop import Trainer
from recipe_runner.trainer.save_clock import SaveClock


def test_due_once_the_minutes_have_passed_since_the_last_save(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(save_clock.time, "monotonic", lambda: now[0])
    clock = SaveClock(2)
    now[0] += 119
    assert not clock.due()
    now[0] += 1
    assert clock.due()
    clock.restart()
    assert not clock.due()
    assert not SaveClock(None).due()


@pytest.mark.slow
@pytest.mark.parametrize(("minutes", "expected"), [("1e-9", list(range(1, 11))), ("null", [10])])
def test_one_process_checkpoints_after_any_step_where_the_clock_is_due_not_only_at_logging_steps(
    tiny_recipe_path, tiny_overrides, tmp_path, minutes, expected
):
    overrides = [
        *tiny_overrides,
        "stages.0.epochs=null",
        "stages.0.steps=10",
        "output.save_every_steps=1000",
        "output.log_every_steps=4",
        "output.eval_every_steps=1000",
        "output.keep_last=10",
        f"output.save_every_minutes={minutes}",
    ]
    Trainer(load_recipe(tiny_recipe_path, overrides).recipe, progress=False).run()
    saved = [int(path.name.split("-")[1]) for path in step_checkpoints(tmp_path / "run" / "checkpoints")]
    assert saved == expected

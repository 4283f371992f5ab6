"""Stages run in order with their own trainable parts; LoRA adapters are merged when their stage ends."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from recipe_runner.loader import load_recipe
from recipe_runner.trainer.checkpoint import read_position, step_checkpoints
from recipe_runner.trainer.loop import Trainer

pytestmark = pytest.mark.slow

TWO_STAGES = Path(__file__).parents[2] / "assets" / "recipes" / "two_stage_tiny.yaml"


def test_two_stages_freeze_train_and_merge(tmp_path, monkeypatch):
    recipe = load_recipe(TWO_STAGES, [f"output.dir={tmp_path / 'run'}", f"teacher.cache.dir={tmp_path / 'c'}"]).recipe
    trainer = Trainer(recipe, progress=False)
    student_before = {k: v.clone() for k, v in trainer.parts.model.student.state_dict().items()}
    bolt_before = {k: v.clone() for k, v in trainer.parts.model.bolt_on.state_dict().items()}

    seen: dict[str, dict] = {}
    original = Trainer._run_stage

    def spy(self, stage_index, position, stop):
        result = original(self, stage_index, position, stop)
        seen[self.recipe.stages[stage_index].name] = {
            "student": {k: v.clone() for k, v in self.parts.model.student.state_dict().items()},
            "bolt_on": {k: v.clone() for k, v in self.parts.model.bolt_on.state_dict().items()},
        }
        return result

    monkeypatch.setattr(Trainer, "_run_stage", spy)
    summary = trainer.run()

    assert summary.global_step == 12
    warm = seen["bolt_on_warmup"]
    assert all(torch.equal(warm["student"][k], student_before[k]) for k in student_before)
    assert any(not torch.equal(warm["bolt_on"][k], bolt_before[k]) for k in bolt_before)
    merged = seen["student_lora"]["student"]
    assert not any("lora" in key for key in merged), "adapters must be merged into the student"
    assert any(not torch.equal(merged[k], student_before[k]) for k in student_before)

    stages_logged = {json.loads(line).get("stage") for line in (tmp_path / "run" / "metrics.jsonl").open()}
    assert {"bolt_on_warmup", "student_lora"} <= stages_logged
    last = step_checkpoints(tmp_path / "run" / "checkpoints")[-1]
    assert read_position(last).stage == 1 and read_position(last).stage_step == 6


def test_resume_inside_a_lora_stage(tmp_path, capsys):
    """Killed inside the LoRA stage (its adapters not merged yet): the resumed run ends as an uninterrupted one."""

    def recipe(run: str):
        overrides = [f"output.dir={tmp_path / run}", f"teacher.cache.dir={tmp_path / 'c'}", "output.keep_last=10"]
        return load_recipe(TWO_STAGES, overrides).recipe

    Trainer(recipe("whole"), progress=False).run()
    Trainer(recipe("run"), progress=False).run()
    checkpoints = tmp_path / "run" / "checkpoints"
    for later in [*(c for c in step_checkpoints(checkpoints) if int(c.name.split("-")[1]) > 9), checkpoints / "best"]:
        shutil.rmtree(later)  # `best`, of the evaluation at the end, would resume at the end: nothing trained
    shutil.rmtree(tmp_path / "run" / "export")
    capsys.readouterr()
    assert Trainer(recipe("run"), resume=True, progress=False).run().global_step == 12
    assert f"resuming from {checkpoints / 'step-00000009'} (stage 'student_lora', step 9;" in capsys.readouterr().err
    whole = load_file(tmp_path / "whole" / "checkpoints" / "step-00000012" / "model.safetensors")
    again = load_file(checkpoints / "step-00000012" / "model.safetensors")
    assert whole.keys() == again.keys()
    for name in whole:
        torch.testing.assert_close(whole[name], again[name], msg=name)


def test_best_is_kept_per_stage(tmp_path):
    """Stage 1 weighs its loss 100 times: compared with stage 0's best it would never be saved as best."""
    overrides = [
        f"output.dir={tmp_path / 'run'}",
        f"teacher.cache.dir={tmp_path / 'c'}",
        "stages.1.losses.0.weight=100",
    ]
    Trainer(load_recipe(TWO_STAGES, overrides).recipe, progress=False).run()
    assert read_position(tmp_path / "run" / "checkpoints" / "best").stage == 1


def test_a_warmup_longer_than_a_stage_counted_in_epochs_is_said_when_its_steps_are_known(
    tiny_recipe_path, tiny_overrides, capsys
):
    prompts = Path(__file__).parents[3] / "data" / "prompts" / "train.txt"
    overrides = [*tiny_overrides, f"data.train={{path: {prompts}, limit: 32}}", "hardware.batch_size=16",
                 "stages.0.epochs=1", "stages.0.warmup_steps=5", "output.eval_every_steps=1000"]  # fmt: skip
    Trainer(load_recipe(tiny_recipe_path, overrides).recipe, progress=False).run()
    err = capsys.readouterr().err
    assert "warning: stages[0].warmup_steps 5 is not below the stage's 2 steps (1 epoch)" in err

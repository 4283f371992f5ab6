"""A run that stops on a failure (NaN loss, out of memory, a data-loader or disk failure) keeps every step it
finished and says what to change; a resume after it continues as the recipe now says."""

from __future__ import annotations

import json
import os
import re
import signal
from pathlib import Path

import pytest
import torch
from short_runs import short_run

from recipe_runner.loader import load_recipe
from recipe_runner.trainer.checkpoint import step_checkpoints
from recipe_runner.trainer.loop import Trainer
from recipe_runner.trainer.stops import (
    CheckpointWriteError,
    TrainingDataFailed,
    TrainingDiverged,
    TrainingInterrupted,
    TrainingOutOfMemory,
)

pytestmark = pytest.mark.slow


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_recipe_path, tiny_overrides, tmp_path, monkeypatch):
    from components.losses import distill_loss

    recipe = load_recipe(tiny_recipe_path, short_run(tiny_overrides, steps=40, save_every=10)).recipe
    trainer = Trainer(recipe, progress=False)
    calls = {"n": 0}
    original = distill_loss.DistillLoss.__call__

    def poisoned(self, pairs):
        total, terms = original(self, pairs)
        calls["n"] += 1
        return (total * float("nan") if calls["n"] > 25 else total), terms

    monkeypatch.setattr(distill_loss.DistillLoss, "__call__", poisoned)
    with pytest.raises(TrainingDiverged, match="NaN or inf"):
        trainer.run()
    kept = step_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in kept] == ["step-00000010", "step-00000020"]


def test_out_of_memory_keeps_the_steps_before_it_and_a_smaller_batch_resumes_mid_epoch(
    tiny_recipe_path, tiny_overrides, tmp_path, monkeypatch, capsys
):
    from recipe_runner.trainer.parts import DistillModel

    # Fail on the 8th step, two steps after the checkpoint at step 5.
    recipe = load_recipe(tiny_recipe_path, short_run(tiny_overrides, steps=8, save_every=5)).recipe
    calls = {"n": 0}
    original = DistillModel.forward

    def runs_out(self, *args, **kwargs):
        if self.training:
            calls["n"] += 1
            if calls["n"] == 8:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DistillModel, "forward", runs_out)
    with pytest.raises(TrainingOutOfMemory) as caught:
        Trainer(recipe, progress=False).run()
    message = str(caught.value)
    assert "at step 8 on a batch of" in message and "the last checkpoint is" in message
    assert "step-00000007" in message
    assert "hardware.batch_size (now 16)" in message and "gradient_checkpointing: true" in message
    assert "--resume" in message
    kept = step_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in kept] == ["step-00000005", "step-00000007"]
    assert json.loads((kept[-1] / "trainer_state.json").read_text())["batch"] == 7  # the failed batch comes again
    monkeypatch.setattr(DistillModel, "forward", original)

    smaller = load_recipe(
        tiny_recipe_path, [*short_run(tiny_overrides, steps=8, save_every=5), "hardware.batch_size=8"]
    ).recipe
    summary = Trainer(smaller, resume=True, progress=False).run()
    assert summary.global_step == 8
    pattern = r"with (\d+) batches per epoch and process instead of (\d+) .* at batch (\d+) instead of 7"
    notice = re.search(pattern, capsys.readouterr().err)
    now, before, batch = (int(value) for value in notice.groups())
    assert now > before and batch == 7 * now // before  # the same fraction of the epoch, rounded down


@pytest.mark.parametrize("change", ["hardware.batch_size=8", "hardware.grad_accum=2"])
def test_a_stage_of_epochs_resumed_with_other_batching_still_trains_its_epochs(
    change, tiny_recipe_path, tiny_overrides, tmp_path, monkeypatch, capsys
):
    from recipe_runner.trainer.parts import DistillModel

    prompts = Path(__file__).parents[3] / "data" / "prompts" / "train.txt"
    overrides = [*tiny_overrides, "stages.0.epochs=2", "output.eval_every_steps=1000", "output.save_every_steps=1000"]
    overrides.append(f"data.train={{path: {prompts}, limit: 240}}")  # 15 batches of 16 an epoch
    calls = {"n": 0}
    original = DistillModel.forward

    def runs_out_once(self, *args, **kwargs):
        calls["n"] += self.training
        if self.training and calls["n"] == 20:  # in the second epoch
            raise torch.OutOfMemoryError("CUDA out of memory.")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DistillModel, "forward", runs_out_once)
    with pytest.raises(TrainingOutOfMemory):
        Trainer(load_recipe(tiny_recipe_path, overrides).recipe, progress=False).run()  # checkpoint at step 19
    calls["n"] = -(10**9)  # counts the resumed run's training forwards, never fails again
    capsys.readouterr()

    resumed = Trainer(load_recipe(tiny_recipe_path, [*overrides, change]).recipe, resume=True, progress=False)
    per_epoch, total = len(resumed.batches.epoch_order(0, 1)), resumed.batches.total_steps(0, resumed.recipe.stages[0])
    resumed.run()
    said = capsys.readouterr().err
    assert "step-00000019 (stage 'distill', step 19;" in said
    start = int(re.search(r"its step 19 is now step (\d+) of", said)[1])
    # Only the steps after the checkpoint were trained: a run that started over would train them all.
    assert calls["n"] + 10**9 == (total - start) * resumed.recipe.hardware.grad_accum
    final = json.loads((step_checkpoints(tmp_path / "run" / "checkpoints")[-1] / "trainer_state.json").read_text())
    # The second epoch ran to its end (one batch more at most, where an odd batch count meets grad_accum 2).
    assert (final["epoch"], final["batch"]) in {(1, per_epoch), (2, 1)}, final
    assert final["stage_step"] == total


def test_out_of_memory_in_an_evaluation_keeps_the_step_it_evaluated(
    tiny_recipe_path, tiny_overrides, tmp_path, monkeypatch
):
    from recipe_runner.trainer.parts import DistillModel

    overrides = [*short_run(tiny_overrides, steps=8, save_every=10), "output.eval_every_steps=4"]
    recipe = load_recipe(tiny_recipe_path, overrides).recipe
    steps = {"n": 0}
    original = DistillModel.forward

    def runs_out_in_the_second_evaluation(self, *args, **kwargs):
        steps["n"] += self.training
        if not self.training and steps["n"] >= 4:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DistillModel, "forward", runs_out_in_the_second_evaluation)
    expected = r"in the evaluation at step 4; the last checkpoint is .*step-00000004"
    with pytest.raises(TrainingOutOfMemory, match=expected):
        Trainer(recipe, progress=False).run()
    kept = step_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in kept] == ["step-00000004"]
    assert json.loads((kept[0] / "trainer_state.json").read_text())["global_step"] == 4


def _worker_failing_at(recipe_path, overrides, monkeypatch, batch: int, failure) -> Trainer:
    """A 12-step run with one loader worker, which calls `failure` (in the worker) as it makes batch `batch`."""
    from components.data.pipeline import PromptPairs

    overrides = [*short_run(overrides, steps=12, save_every=5), "hardware.num_workers=1"]
    trainer = Trainer(load_recipe(recipe_path, overrides).recipe, progress=False)
    doomed = trainer.batches.epoch_order(0, 0)[batch][0]  # a prompt of that batch
    original = PromptPairs.__getitem__

    def fails_at_that_batch(self, index):
        if self is trainer.parts.train and index == doomed:
            failure()
        return original(self, index)

    monkeypatch.setattr(PromptPairs, "__getitem__", fails_at_that_batch)
    return trainer


def test_a_killed_loader_worker_keeps_the_steps_before_it(tiny_recipe_path, tiny_overrides, tmp_path, monkeypatch):
    def killed() -> None:
        os.kill(os.getpid(), signal.SIGKILL)  # inside the worker process, as the kernel's OOM killer would

    trainer = _worker_failing_at(tiny_recipe_path, tiny_overrides, monkeypatch, 9, killed)  # the 10th batch
    with pytest.raises(TrainingDataFailed) as caught:
        trainer.run()
    message = str(caught.value)
    # torch reports the death from a signal handler, while the step in flight is one of the two before batch 10
    # (the worker prefetches two batches).
    failed = int(re.match(r"the training data failed at step (\d+): RuntimeError: DataLoader worker", message)[1])
    assert 8 <= failed <= 10, message
    assert f"step-{failed - 1:08d}" in message and "hardware.num_workers" in message and "--resume" in message
    kept = step_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in kept] == ["step-00000005", f"step-{failed - 1:08d}"]
    state = json.loads((kept[-1] / "trainer_state.json").read_text())
    assert (state["global_step"], state["epoch"], state["batch"]) == (failed - 1, 0, failed - 1)


def test_a_batch_a_worker_never_delivers_stops_the_run_after_the_loader_timeout(
    tiny_recipe_path, tiny_overrides, tmp_path, monkeypatch
):
    """A worker whose batch is lost (its queue thread failed, as with a TMPDIR too long for a socket) or that
    hangs: the run stops with a checkpoint of the steps before, not waits through the night."""
    import time

    from recipe_runner.trainer import batch_plan

    def never_returns() -> None:
        time.sleep(3600)  # inside the worker, which the loader terminates as it shuts down

    monkeypatch.setattr(batch_plan, "LOADER_TIMEOUT_S", 3)
    trainer = _worker_failing_at(tiny_recipe_path, tiny_overrides, monkeypatch, 7, never_returns)  # the 8th batch
    started = time.monotonic()
    with pytest.raises(TrainingDataFailed) as caught:
        trainer.run()
    assert time.monotonic() - started < 60
    message = str(caught.value)
    assert message.startswith("the training data failed at step 8: RuntimeError: DataLoader timed out after 3 s")
    assert "one that timed out lost or never made its batch" in message and "step-00000007" in message
    assert "recipe cache" not in message  # the teacher runs live here: there is no cache to verify
    kept = step_checkpoints(tmp_path / "run" / "checkpoints")
    assert [p.name for p in kept] == ["step-00000005", "step-00000007"]


def test_a_full_disk_under_the_metrics_log_names_the_intact_checkpoint(
    tiny_recipe_path, tiny_overrides, tmp_path, monkeypatch
):
    import errno

    from recipe_runner.trainer.run_log import MetricsLog

    overrides = [*short_run(tiny_overrides, steps=8, save_every=5), "output.log_every_steps=1"]
    original = MetricsLog.write

    def fills_up(self, step, values):
        if step == 7:
            raise OSError(errno.ENOSPC, "No space left on device", str(self.file))
        return original(self, step, values)

    monkeypatch.setattr(MetricsLog, "write", fills_up)
    with pytest.raises(CheckpointWriteError) as caught:
        Trainer(load_recipe(tiny_recipe_path, overrides).recipe, progress=False).run()
    message = str(caught.value)
    assert "metrics.jsonl: No space left on device" in message and "step-00000005 is intact" in message
    assert "--resume" in message


def test_a_full_disk_stops_with_the_intact_checkpoint_named(
    tiny_recipe_path, tiny_overrides, tmp_path, monkeypatch, disk_full_in_safetensors
):
    from recipe_runner.trainer import checkpoint

    recipe = load_recipe(tiny_recipe_path, short_run(tiny_overrides, steps=8, save_every=3)).recipe
    writes = {"n": 0}
    original = checkpoint.save_file

    def fills_up(*args, **kwargs):
        writes["n"] += 1
        if writes["n"] > 3:  # the first checkpoint fits; the second runs out of room half-way through
            raise disk_full_in_safetensors
        return original(*args, **kwargs)

    monkeypatch.setattr(checkpoint, "save_file", fills_up)
    with pytest.raises(CheckpointWriteError) as caught:
        Trainer(recipe, progress=False).run()
    message = str(caught.value)
    assert "step-00000006" in message and "No space left on device" in message
    assert "step-00000003 is intact" in message and "--resume" in message
    root = tmp_path / "run" / "checkpoints"
    assert [p.name for p in root.iterdir()] == ["step-00000003"]  # no temporary directory left behind


def _interrupted_in_an_evaluation(monkeypatch, after_steps: int, at: tuple[int, ...] = (2,)) -> dict[str, int]:
    """SIGINT arrives during eval batch `at` (counted over every evaluation after `after_steps` steps, resumed
    runs included): the second batch of the first one, by default."""
    from recipe_runner.trainer.parts import DistillModel

    calls = {"train": 0, "eval": 0}
    original = DistillModel.forward

    def interrupts(self, *args, **kwargs):
        calls["train" if self.training else "eval"] += 1
        if not self.training and calls["train"] == after_steps:
            calls["this_eval"] = calls.get("this_eval", 0) + 1
            if calls["this_eval"] in at:
                os.kill(os.getpid(), signal.SIGINT)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DistillModel, "forward", interrupts)
    return calls


def test_ctrl_c_in_the_first_evaluation_stops_at_once_with_nothing_to_save(
    tiny_recipe_path, tiny_overrides, tmp_path, monkeypatch, capfd
):
    from recipe_runner.trainer.stops import TrainingInterrupted

    calls = _interrupted_in_an_evaluation(monkeypatch, after_steps=0)
    recipe = load_recipe(tiny_recipe_path, short_run(tiny_overrides, steps=8, save_every=5)).recipe
    with pytest.raises(TrainingInterrupted, match="before the first step of stage 'distill', with nothing new"):
        Trainer(recipe, progress=False).run()
    assert calls["eval"] == 2 and calls["train"] == 0, "left the evaluation at once and trained nothing"
    assert step_checkpoints(tmp_path / "run" / "checkpoints") == []
    assert "stopping after the step or evaluation in progress, saving what was trained" in capfd.readouterr().err


def test_ctrl_c_in_a_later_evaluation_saves_that_step_and_resume_makes_that_evaluation_first(
    tiny_recipe_path, tiny_overrides, tmp_path, monkeypatch
):
    from recipe_runner.trainer.checkpoint import read_position
    from recipe_runner.trainer.stops import TrainingInterrupted

    calls = _interrupted_in_an_evaluation(monkeypatch, after_steps=8)
    overrides = [*short_run(tiny_overrides, steps=12, save_every=10), "output.eval_every_steps=4"]
    recipe = load_recipe(tiny_recipe_path, overrides).recipe
    with pytest.raises(TrainingInterrupted, match="interrupted at step 8"):
        Trainer(recipe, progress=False).run()
    assert calls["this_eval"] == 2
    [kept] = step_checkpoints(tmp_path / "run" / "checkpoints")
    assert kept.name == "step-00000008" and read_position(kept).eval_pending
    metrics = tmp_path / "run" / "metrics.jsonl"
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    # The evaluation at step 4 is logged once; none from half an evaluation, nor the step-4 one again at step 8.
    assert [row["step"] for row in rows if "eval/loss" in row] == [0, 4]

    Trainer(recipe, resume=True, progress=False).run()
    rows = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [row["step"] for row in rows if "eval/loss" in row] == [0, 4, 8, 12]
    assert calls["train"] == 12, "the step-8 evaluation came before training went on"
    best = read_position(tmp_path / "run" / "checkpoints" / "best")
    evals = {row["step"]: row["eval/loss"] for row in rows if "eval/loss" in row}
    assert best.best_eval == min(evals.values()) and not best.eval_pending


def test_ctrl_c_in_the_evaluation_a_resume_makes_first_leaves_it_pending(
    tiny_recipe_path, tiny_overrides, tmp_path, monkeypatch
):
    from recipe_runner.trainer.checkpoint import read_position
    from recipe_runner.trainer.stops import TrainingInterrupted

    calls = _interrupted_in_an_evaluation(monkeypatch, after_steps=8, at=(2, 4))
    overrides = [*short_run(tiny_overrides, steps=12, save_every=10), "output.eval_every_steps=4"]
    recipe = load_recipe(tiny_recipe_path, overrides).recipe
    with pytest.raises(TrainingInterrupted, match="interrupted at step 8"):
        Trainer(recipe, progress=False).run()
    with pytest.raises(TrainingInterrupted, match="during the evaluation of step 8, which was cut short before"):
        Trainer(recipe, resume=True, progress=False).run()
    [kept] = step_checkpoints(tmp_path / "run" / "checkpoints")
    assert kept.name == "step-00000008" and read_position(kept).eval_pending and calls["train"] == 8
    Trainer(recipe, resume=True, progress=False).run()
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "eval/loss" in row] == [0, 4, 8, 12]


def test_a_stop_during_the_final_export_says_how_to_get_the_export(tiny_recipe_path, tiny_overrides, monkeypatch):
    import components.export

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # what stops_as_interrupts makes of SIGTERM or a hangup, as of Ctrl-C

    monkeypatch.setattr(components.export, "export_encoder", interrupted)
    recipe = load_recipe(tiny_recipe_path, short_run(tiny_overrides, steps=2, save_every=1000)).recipe
    with pytest.raises(TrainingInterrupted) as caught:
        Trainer(recipe, progress=False).run()
    assert str(caught.value).startswith("interrupted while writing the export, after training finished (the last ")
    assert "step-00000002); nothing was left half-written: `recipe run RECIPE --resume`" in str(caught.value)


def test_a_better_evaluation_that_best_could_not_keep_is_not_the_one_compared_with(tiny_recipe_path, tiny_overrides):
    """`best` holding a person's files keeps its old weights; the next evaluation is compared with those weights'
    loss, not with the loss of weights that were never written."""
    from recipe_runner.trainer.checkpoint import Position

    trainer = Trainer(load_recipe(tiny_recipe_path, short_run(tiny_overrides, steps=4, save_every=4)).recipe)
    saves = []
    trainer._save = lambda position, name=None: saves.append((position.global_step, name)) or len(saves) > 1
    position = Position(global_step=4)
    trainer._record_evaluation(position, "distill", {"eval/loss": 0.5})  # not written: `best` is the user's
    assert position.best_eval is None
    position.global_step = 8
    trainer._record_evaluation(position, "distill", {"eval/loss": 0.6})
    assert saves == [(4, "best"), (8, "best")] and position.best_eval == 0.6

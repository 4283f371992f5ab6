"""--resume takes its state from the checkpoint and its settings from the recipe; what cannot continue is refused
before anything is written; one run per output directory; nothing of an earlier run is replaced."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from short_runs import constant_run

from recipe_runner.loader import load_recipe
from recipe_runner.trainer.checkpoint import step_checkpoints
from recipe_runner.trainer.loop import Trainer
from recipe_runner.trainer.parts import RunSetupError
from recipe_runner.trainer.resume import ResumeMismatchError
from recipe_runner.trainer.run_dir import DirectoryLock
from recipe_runner.trainer.stops import DamagedCheckpoint

pytestmark = pytest.mark.slow

PROMPTS = Path(__file__).parents[3] / "data" / "prompts" / "train.txt"


_short = constant_run


def _train(recipe_path: Path, overrides: list[str], resume: bool = False):
    return Trainer(load_recipe(recipe_path, overrides).recipe, resume=resume, progress=False).run()


def _rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_a_new_learning_rate_applies_after_resume_and_the_old_recipe_is_kept(
    tiny_recipe_path, tiny_overrides, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    _train(tiny_recipe_path, _short(tiny_overrides, 4))
    # Continue to step 6 with a tenth of the student's learning rate (as after a divergence).
    lowered = _short(tiny_overrides, 6, "stages.0.lr.student=1.0e-4")
    _train(tiny_recipe_path, lowered, resume=True)

    lrs = {row["step"]: row["lr/student"] for row in _rows(run_dir) if "lr/student" in row}
    assert lrs[4] == pytest.approx(1.0e-3) and lrs[5] == pytest.approx(1.0e-4) and lrs[6] == pytest.approx(1.0e-4)
    err = capsys.readouterr().err
    assert (
        f"resuming from {run_dir / 'checkpoints' / 'step-00000004'} (stage 'distill', step 4; epoch 0, batch 4)" in err
    )
    assert "resuming with recipe changes" in err and "stages.0.lr.student: 0.001 -> 0.0001" in err
    assert "stages.0.steps: 4 -> 6" in err
    earlier = run_dir / "resolved_recipe.until-step-00000004.yaml"
    assert "0.001" in earlier.read_text() and "0.0001" in (run_dir / "resolved_recipe.yaml").read_text()


def test_the_command_a_refusal_offers_resumes_the_copied_run_not_the_one_it_was_copied_from(
    tiny_recipe_path, tiny_overrides, tmp_path
):
    """A resolved recipe names the folder its run was written in: run as offered on a copy, it trained the original."""
    import shlex

    from recipe_runner.trainer.resume import with_its_recipe

    original = tmp_path / "run"
    _train(tiny_recipe_path, _short(tiny_overrides, 2))
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)
    before = sorted(p.name for p in (original / "checkpoints").iterdir())
    moved = [*_short(tiny_overrides, 4), f"output.dir={copy}", "stages.0.trainable=[bolt_on]"]
    with pytest.raises(ResumeMismatchError) as caught:
        _train(tiny_recipe_path, moved, resume=True)
    offered = str(caught.value).split("Resume with the recipe it was trained with, `")[1].split("`")[0]
    assert offered == with_its_recipe(copy / "checkpoints" / "step-00000002", "run", "--resume")
    verb, recipe, *rest = shlex.split(offered)[1:]
    sets = [rest[i + 1] for i, arg in enumerate(rest) if arg == "--set"]
    assert verb == "run" and sets == [f"output.dir={copy}"] and rest[-1] == "--resume"
    summary = _train(Path(recipe), [*sets, "stages.0.steps=4"], resume=True)
    assert summary.export_dir == copy / "export"
    assert sorted(p.name for p in (original / "checkpoints").iterdir()) == before  # the original is untouched


def test_other_train_prompts_or_trained_parts_are_refused_before_anything_is_written(
    tiny_recipe_path, tiny_overrides, tmp_path
):
    run_dir = tmp_path / "run"
    _train(tiny_recipe_path, _short(tiny_overrides, 2))
    before = {name: (run_dir / name).read_bytes() for name in ("metrics.jsonl", "resolved_recipe.yaml")}

    with pytest.raises(ResumeMismatchError, match="train prompts") as caught:
        _train(tiny_recipe_path, _short(tiny_overrides, 4, f"data.train={{path: {PROMPTS}, limit: 100}}"), resume=True)
    assert "step-00000002" in str(caught.value) and "resolved_recipe.yaml" in str(caught.value)
    with pytest.raises(ResumeMismatchError, match=r"stages\.0\.trainable"):
        _train(tiny_recipe_path, _short(tiny_overrides, 4, "stages.0.trainable=[bolt_on]"), resume=True)
    with pytest.raises(ResumeMismatchError, match="trained_weights"):
        _train(
            tiny_recipe_path,
            _short(tiny_overrides, 4, "hardware.trained_weights=bf16_stochastic", "hardware.precision=bf16"),
            resume=True,
        )

    stage = "{name: warm, steps: 2, trainable: [bolt_on], lr: {bolt_on: 1.0e-3}, losses: [{type: huber, on: matched}]}"
    inserted = _short(tiny_overrides, 4, f"stages=[{stage}, {{name: distill, steps: 4, trainable: [student, bolt_on], "
                      "lr: {student: 1.0e-3, bolt_on: 1.0e-3}, losses: [{type: huber, on: matched}]}]")  # fmt: skip
    with pytest.raises(ResumeMismatchError, match="saved in stage 0 'distill', and stage 0 is now 'warm'"):
        _train(tiny_recipe_path, inserted, resume=True)

    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert [p.name for p in step_checkpoints(run_dir / "checkpoints")] == ["step-00000002"]


def test_a_damaged_checkpoint_is_named_with_the_earlier_one_to_use(tiny_recipe_path, tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    _train(tiny_recipe_path, _short(tiny_overrides, 4))
    model_file = run_dir / "checkpoints" / "step-00000004" / "model.safetensors"
    model_file.write_bytes(model_file.read_bytes()[:100])

    with pytest.raises(DamagedCheckpoint) as caught:
        _train(tiny_recipe_path, _short(tiny_overrides, 6), resume=True)
    message = str(caught.value)
    assert "step-00000004" in message and "continues from best (step 4)" in message  # as new as the damaged one

    shutil.move(str(model_file.parent), str(tmp_path / "inspect"))
    summary = _train(tiny_recipe_path, _short(tiny_overrides, 6), resume=True)
    assert summary.global_step == 6


def test_a_damaged_state_file_is_named_and_a_damaged_best_is_not_offered(tiny_recipe_path, tiny_overrides, tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    _train(tiny_recipe_path, _short(tiny_overrides, 4))
    for directory in (checkpoints / "step-00000004", checkpoints / "best"):
        (directory / "checksums.json").unlink(missing_ok=True)  # unchecked: the files' shape is all there is
        (directory / "state.json").write_text("[]")
    with pytest.raises(DamagedCheckpoint) as caught:
        _train(tiny_recipe_path, _short(tiny_overrides, 6), resume=True)
    message = str(caught.value)
    assert "state.json: not the optimizer, schedule and RNG state a checkpoint writes" in message
    assert "continues from step-00000002" in message  # not from best, as damaged as step 4


def test_a_newest_step_whose_position_cannot_be_read_is_named_not_passed_over_for_an_older_best(
    tiny_recipe_path, tiny_overrides, tmp_path
):
    checkpoints = tmp_path / "run" / "checkpoints"
    _train(tiny_recipe_path, _short(tiny_overrides, 4))
    shutil.rmtree(checkpoints / "best")
    shutil.copytree(checkpoints / "step-00000002", checkpoints / "best")  # a best of step 2
    (checkpoints / "step-00000004" / "trainer_state.json").write_text('{"stage": 0')  # cut short
    with pytest.raises(DamagedCheckpoint) as caught:
        _train(tiny_recipe_path, _short(tiny_overrides, 6), resume=True)
    message = str(caught.value)
    assert message.startswith(f"cannot resume from {checkpoints / 'step-00000004'}: ")
    assert message.endswith("then continues from step-00000002")


def test_a_changed_weight_byte_is_caught_by_the_sums_before_training_goes_on_from_it(
    tiny_recipe_path, tiny_overrides, tmp_path
):
    checkpoints = tmp_path / "run" / "checkpoints"
    _train(tiny_recipe_path, _short(tiny_overrides, 4))
    assert all((p / "checksums.json").is_file() for p in step_checkpoints(checkpoints))
    model_file = checkpoints / "step-00000004" / "model.safetensors"
    data = bytearray(model_file.read_bytes())
    data[-7] ^= 0x10  # the header stays whole: safetensors loads the file
    model_file.write_bytes(bytes(data))

    with pytest.raises(DamagedCheckpoint) as caught:
        _train(tiny_recipe_path, _short(tiny_overrides, 6), resume=True)
    message = str(caught.value)
    assert f"{model_file} is not the file it was written as (its SHA-256 differs)" in message
    assert "continues from best (step 4)" in message


def test_weights_that_no_longer_fit_name_the_architecture_change_not_damage(tiny_recipe_path, tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    _train(tiny_recipe_path, _short(tiny_overrides, 2))
    with pytest.raises(ResumeMismatchError) as caught:
        _train(tiny_recipe_path, _short(tiny_overrides, 4, "bolt_on.layers.2.ffn_dim=100"), resume=True)
    message = str(caught.value)
    assert "holds weights of another architecture than this recipe builds" in message
    assert "bolt_on.layers.2.ffn_dim: 192 -> 100" in message and "resolved_recipe.yaml" in message
    assert "damaged" not in message and "move it out" not in message
    assert [p.name for p in step_checkpoints(run_dir / "checkpoints")] == ["step-00000002"]
    assert _train(tiny_recipe_path, _short(tiny_overrides, 4), resume=True).global_step == 4  # the recipe as it was


def test_a_resume_refused_on_loading_the_checkpoint_keeps_every_metrics_row(
    tiny_recipe_path, tiny_overrides, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    _train(tiny_recipe_path, _short(tiny_overrides, 4))
    shutil.rmtree(run_dir / "checkpoints" / "step-00000004")  # killed after step 4 was logged, before its save
    shutil.rmtree(run_dir / "checkpoints" / "best")  # step 4's evaluation wrote it: a resume would start there
    before = (run_dir / "metrics.jsonl").read_bytes()
    assert max(row["step"] for row in _rows(run_dir)) == 4

    with pytest.raises(ResumeMismatchError, match="another architecture"):
        _train(tiny_recipe_path, _short(tiny_overrides, 6, "bolt_on.layers.2.ffn_dim=100"), resume=True)
    assert (run_dir / "metrics.jsonl").read_bytes() == before

    capsys.readouterr()
    _train(tiny_recipe_path, _short(tiny_overrides, 6), resume=True)  # accepted: steps 3-4 are logged anew
    assert "step-00000002 (stage 'distill', step 2;" in capsys.readouterr().err
    assert [row["step"] for row in _rows(run_dir) if "loss" in row] == [1, 2, 3, 4, 5, 6]


def test_a_run_killed_between_an_evaluation_and_its_next_step_checkpoint_resumes_from_best(
    tiny_recipe_path, tiny_overrides, tmp_path, capsys
):
    checkpoints = tmp_path / "run" / "checkpoints"
    _train(tiny_recipe_path, _short(tiny_overrides, 3, "output.eval_every_steps=3", "output.save_every_steps=1000"))
    for step in step_checkpoints(checkpoints):  # as if killed before the first step checkpoint
        shutil.rmtree(step)
    capsys.readouterr()
    with pytest.raises(RunSetupError, match=r"or continue it from there \(step 3\) with `recipe run RECIPE --resume`"):
        _train(tiny_recipe_path, _short(tiny_overrides, 5))
    assert _train(tiny_recipe_path, _short(tiny_overrides, 5), resume=True).global_step == 5
    err = capsys.readouterr().err
    assert f"resuming from {checkpoints / 'best'} (stage 'distill', step 3;" in err and "step 0" not in err


def test_a_step_folder_the_run_would_write_again_but_may_not_replace_is_refused_at_once(
    tiny_recipe_path, tiny_overrides, tmp_path, capsys
):
    checkpoints = tmp_path / "run" / "checkpoints"
    _train(tiny_recipe_path, _short(tiny_overrides, 4, "output.keep_best=false"))
    (checkpoints / "step-00000004" / "trainer_state.json").unlink()  # a copy cut short
    with pytest.raises(RunSetupError) as caught:
        _train(tiny_recipe_path, _short(tiny_overrides, 6), resume=True)
    assert str(caught.value).startswith(
        f"{checkpoints / 'step-00000004'} is not a whole checkpoint (it has no trainer_state.json: a copy cut short, "
        "or a file deleted); the run would write it again at step 4"
    )
    (checkpoints / "step-00000004").rename(checkpoints / "step-00000004.incomplete")  # the advice, followed
    (checkpoints / "step-00000001").mkdir()  # older than where the resume starts: only said
    capsys.readouterr()
    assert _train(tiny_recipe_path, _short(tiny_overrides, 6), resume=True).global_step == 6
    assert (
        f"warning: {checkpoints / 'step-00000001'} is not a whole checkpoint (no trainer_state.json) and is never "
        "read: delete it to free 0 bytes"
    ) in capsys.readouterr().err


def test_a_best_folder_the_run_may_not_replace_is_refused_before_training(tiny_recipe_path, tiny_overrides, tmp_path):
    """The first better evaluation replaces `best`: one that is not a checkpoint, or holds a person's files, is
    refused at the start, not after the steps before that evaluation (which would be lost)."""
    from components.atomic_files import ForeignDirectoryError

    run_dir = tmp_path / "run"
    best = run_dir / "checkpoints" / "best"
    _train(tiny_recipe_path, _short(tiny_overrides, 2, "output.eval_every_steps=2"))
    (best / "notes.txt").write_text("mine")
    rows = len(_rows(run_dir))
    held = r"best holds notes.txt, which no run wrote; the first better evaluation replaces it, which would lose"
    with pytest.raises(ForeignDirectoryError, match=held + r" them: move those files out of it, then rerun `recipe"):
        _train(tiny_recipe_path, _short(tiny_overrides, 4, "output.eval_every_steps=2"), resume=True)
    shutil.rmtree(best)
    best.mkdir()
    (best / "notes.txt").write_text("mine")
    with pytest.raises(ForeignDirectoryError, match=r"best is not a checkpoint \(no run wrote it\); .*: move it away"):
        _train(tiny_recipe_path, _short(tiny_overrides, 4, "output.eval_every_steps=2"), resume=True)
    assert len(_rows(run_dir)) == rows and (best / "notes.txt").read_text() == "mine"


def test_an_export_into_a_checkpoint_folder_is_refused(tiny_recipe_path, tiny_overrides, tmp_path):
    from click.testing import CliRunner

    from recipe_runner.cli import main

    _train(tiny_recipe_path, _short(tiny_overrides, 2))
    inside = tmp_path / "run" / "checkpoints" / "step-00000002" / "my_export"
    args = ["export", str(tiny_recipe_path), "--checkpoint", str(inside.parent), "--out", str(inside)]
    result = CliRunner().invoke(main, args + [item for o in tiny_overrides for item in ("--set", o)])
    assert result.exit_code != 0 and f"is in {tmp_path / 'run' / 'checkpoints'}, where `recipe run`" in result.output
    assert not inside.exists()


def test_a_step_checkpoint_with_the_wrong_fields_is_damage_not_a_restart(tiny_recipe_path, tiny_overrides, tmp_path):
    newest = tmp_path / "run" / "checkpoints" / "step-00000004"
    _train(tiny_recipe_path, _short(tiny_overrides, 4, "output.keep_best=false"))
    (newest / "checksums.json").unlink()  # hashing cut short: loads unchecked
    state = json.loads((newest / "trainer_state.json").read_text())
    for position, record, why in [
        ({"stage": 0, "global_step": 4}, None, "no whole-number stage_step, epoch, batch"),
        ({**state, "global_step": -5}, None, "negative global_step"),
        ({**state, "batch": 999}, None, "batch 999 is past the"),
        ({**state, "learning": 1}, None, "not a training position this version wrote"),
        (state, {}, "not a run record"),
        (state, [1, 2], "not a run record"),
    ]:
        (newest / "trainer_state.json").write_text(json.dumps(position))
        if record is not None:
            (newest / "run_record.json").write_text(json.dumps(record))
        with pytest.raises(DamagedCheckpoint, match=why):
            _train(tiny_recipe_path, _short(tiny_overrides, 6), resume=True)


def test_steps_logged_after_the_checkpoint_are_logged_once_after_resume(
    tiny_recipe_path, tiny_overrides, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    checkpoints = run_dir / "checkpoints"
    _train(tiny_recipe_path, _short(tiny_overrides, 4))
    # As if killed after logging step 4 but before its checkpoint was complete, while a `best` of step 2 was
    # being swapped in: rows 3 and 4 come after the checkpoint the run goes on from.
    shutil.rmtree(checkpoints / "step-00000004")
    (checkpoints / ".step-00000004.abc12_de.tmp").mkdir()  # what a killed save leaves, and its lock file
    (checkpoints / ".step-00000004.abc12_de.tmp.lock").touch()
    shutil.rmtree(checkpoints / "best")
    shutil.copytree(checkpoints / "step-00000002", checkpoints / ".best.old")  # killed mid-swap
    with (run_dir / "metrics.jsonl").open("a") as handle:
        handle.write('{"step": 4, "loss": 1.0')  # torn last line

    capsys.readouterr()
    _train(tiny_recipe_path, _short(tiny_overrides, 6), resume=True)  # from `best`, put back: step 2
    assert "(stage 'distill', step 2;" in capsys.readouterr().err
    steps = [row["step"] for row in _rows(run_dir) if "loss" in row]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not list((run_dir / "checkpoints").glob(".*.tmp*"))
    assert (run_dir / "checkpoints" / "best" / "trainer_state.json").is_file()


def test_a_fresh_run_never_replaces_an_earlier_runs_export_best_or_metrics(tiny_recipe_path, tiny_overrides, tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "export").mkdir(parents=True)
    (run_dir / "export" / "notes.md").write_text("mine")
    with pytest.raises(RunSetupError, match="export"):
        Trainer(load_recipe(tiny_recipe_path, _short(tiny_overrides, 2)).recipe, progress=False)
    assert (run_dir / "export" / "notes.md").read_text() == "mine"


def test_a_run_that_stopped_before_its_first_checkpoint_can_be_resumed_from_step_0(
    tiny_recipe_path, tiny_overrides, tmp_path, capsys
):
    run_dir = tmp_path / "run"
    overrides = _short(tiny_overrides, 2, "output.keep_best=false", "output.export=false")
    _train(tiny_recipe_path, overrides)
    shutil.rmtree(run_dir / "checkpoints")  # as if killed before its first save: only its log is left
    with pytest.raises(
        RunSetupError,
        match="metrics.jsonl.*or `recipe run RECIPE --resume`, which trains it again from step 0 and writes its log "
        "afresh",
    ):
        _train(tiny_recipe_path, overrides)
    assert _train(tiny_recipe_path, overrides, resume=True).global_step == 2
    assert "no checkpoint in" in capsys.readouterr().err
    steps = [row["step"] for row in _rows(run_dir) if "loss" in row]
    assert steps == [1, 2], "each step logged once"


def test_resume_without_a_checkpoint_says_it_starts_from_step_0(tiny_recipe_path, tiny_overrides, capsys):
    summary = _train(tiny_recipe_path, _short(tiny_overrides, 2), resume=True)
    assert summary.global_step == 2
    said = capsys.readouterr().err
    assert "--resume: nothing to resume in " in said and "(if output.dir is mistyped, stop it now with Ctrl-C)" in said


def test_a_second_run_into_a_directory_in_use_is_refused(tiny_recipe_path, tiny_overrides, tmp_path):
    held = DirectoryLock(tmp_path / "run").acquire()
    try:
        with pytest.raises(RunSetupError, match="in use by another `recipe run`"):
            Trainer(load_recipe(tiny_recipe_path, _short(tiny_overrides, 2)).recipe, progress=False)
    finally:
        held.release()
    summary = _train(tiny_recipe_path, _short(tiny_overrides, 2))  # free again once the first one ends
    assert summary.global_step == 2


def test_the_first_loss_line_after_a_resume_averages_the_steps_an_uninterrupted_run_does(
    tiny_recipe_path, tmp_path, capsys
):
    def overrides(run: str) -> list[str]:
        where = [f"output.dir={tmp_path / run}", f"teacher.cache.dir={tmp_path / 'cache'}"]
        return _short(where, 8, "output.log_every_steps=4", "output.keep_best=false")

    def losses(run: str) -> list[tuple[int, float]]:  # a list: a row logged twice would show
        return [(row["step"], row["loss"]) for row in _rows(tmp_path / run) if "loss" in row]

    _train(tiny_recipe_path, overrides("straight"))
    _train(tiny_recipe_path, overrides("resumed"))
    checkpoints = tmp_path / "resumed" / "checkpoints"
    shutil.rmtree(checkpoints / "step-00000008")  # killed after step 6's checkpoint
    capsys.readouterr()
    _train(tiny_recipe_path, overrides("resumed"), resume=True)
    assert f"resuming from {checkpoints / 'step-00000006'} (" in capsys.readouterr().err
    resumed, straight = losses("resumed"), losses("straight")
    assert [step for step, _ in resumed] == [step for step, _ in straight] == [4, 8]
    # step 8's line: steps 5-8, not 7-8
    assert [loss for _, loss in resumed] == pytest.approx([loss for _, loss in straight], rel=1e-6)


def test_a_recipe_that_inherited_another_recipes_output_dir_never_trains_on_in_it(tiny_recipe_path, tmp_path):
    variant = tmp_path / "variant.yaml"
    variant.write_text(f"extends: {tiny_recipe_path}\nrecipe: my_variant\n")
    base_run = _short([f"output.dir={tmp_path / 'run'}", f"teacher.cache.dir={tmp_path / 'cache'}"], 2)
    _train(tiny_recipe_path, base_run)
    before = (tmp_path / "run" / "export" / "encoder.json").read_bytes()
    with pytest.raises(RunSetupError) as fresh:
        _train(variant, base_run)
    assert str(fresh.value) == (
        f"{tmp_path / 'run'} holds the checkpoints of recipe 't5_to_qwen_tiny' (latest step-00000002), not of "
        "'my_variant': give this recipe an output.dir of its own (e.g. --set output.dir=runs/my_variant); a recipe "
        "that extends another inherits its output.dir"
    )
    with pytest.raises(ResumeMismatchError, match="it was trained by recipe 't5_to_qwen_tiny', not 'my_variant'"):
        _train(variant, base_run, resume=True)
    assert (tmp_path / "run" / "export" / "encoder.json").read_bytes() == before


def test_a_project_that_moved_is_one_line_of_changes_not_one_per_path(tiny_recipe_path, tiny_overrides, tmp_path):
    from recipe_runner.trainer.resume import compare, run_record

    recipe = load_recipe(tiny_recipe_path, tiny_overrides).recipe
    root = str(tiny_recipe_path.parents[2])

    def moved(value):
        if isinstance(value, dict):
            return {key: moved(item) for key, item in value.items()}
        if isinstance(value, list):
            return [moved(item) for item in value]
        return value.replace(root, "/old/place/project", 1) if isinstance(value, str) else value

    record = moved(run_record(recipe, "sha"))
    record["recipe"]["hardware"]["seed"] = 7
    report = compare(record, recipe, "sha", 0)
    assert report.changes[0].startswith(f"paths: /old/place/project -> {root} (")
    assert report.changes[1:] == ["hardware.seed: 7 -> 0"]
    # The tokenizer folder moved with the project: no change. The seed reshuffles the epoch being trained.
    assert report.blocking == [
        "hardware.seed: 7 -> 0 (the saved data position is in an epoch shuffled by the old seed)"
    ]


def test_another_student_tokenizer_is_refused_and_a_seed_change_without_shuffling_is_not(
    tiny_recipe_path, tiny_overrides
):
    from recipe_runner.trainer.resume import compare, run_record

    recipe = load_recipe(tiny_recipe_path, tiny_overrides).recipe
    record = run_record(recipe, "sha")
    other = str(Path(recipe.student.tokenizer).with_name("tiny_t5"))
    record["recipe"]["student"]["tokenizer"] = other
    record["recipe"]["hardware"]["seed"] = 7
    record["recipe"]["data"]["shuffle"] = False
    unshuffled = recipe.model_copy(update={"data": recipe.data.model_copy(update={"shuffle": False})})
    assert compare(record, unshuffled, "sha", 0).blocking == [
        f"student.tokenizer: {other!r} -> {recipe.student.tokenizer!r} (the saved embeddings belong to the old one)"
    ]
    # Shuffling turned on or off orders the saved epoch another way, seed or no seed.
    record = run_record(recipe, "sha")
    assert compare(record, unshuffled, "sha", 0).blocking == [
        "data.shuffle: True -> False (the saved data position is in an epoch ordered the other way)"
    ]


def test_a_reweighed_loss_restarts_the_best_comparison_and_a_moved_floor_is_listed(
    tiny_recipe_path, tiny_overrides, tmp_path, capsys
):
    """Under a hundredfold weight every eval loss is far above the old best: compared with it, `best` would stay
    on the weights of step 4 for the rest of the stage."""
    run_dir = tmp_path / "run"
    unset_floor = ["stages.0.min_lr.student=null"]
    _train(tiny_recipe_path, _short(tiny_overrides, 4, *unset_floor))
    best = run_dir / "checkpoints" / "best" / "trainer_state.json"
    assert json.loads(best.read_text())["global_step"] == 4
    heavier = _short(tiny_overrides, 6, *unset_floor, "stages.0.losses.0.weight=100", "stages.0.lr.student=5e-4")
    _train(tiny_recipe_path, heavier, resume=True)
    assert json.loads(best.read_text())["global_step"] == 6
    err = capsys.readouterr().err
    assert "note: the eval loss is measured otherwise from here on (stages.0.losses.0.weight: 1.0 -> 100.0)" in err
    assert "stages.0.min_lr.student (unset, so lr/10): 0.0001 -> 5e-05" in err


def test_eval_prompts_edited_in_place_restart_the_best_comparison(tiny_recipe_path, tiny_overrides, tmp_path, capsys):
    """No recipe value changes when the eval file is rewritten under its own name: its digest in the checkpoint
    says that `best` was measured on other prompts."""
    eval_file = tmp_path / "eval.txt"
    eval_file.write_text("a red bicycle\na cat on a sofa\na mountain lake at dawn\n")
    overrides = [*tiny_overrides, f"data.eval={eval_file}"]
    _train(tiny_recipe_path, _short(overrides, 4))
    best = tmp_path / "run" / "checkpoints" / "best" / "trainer_state.json"
    assert json.loads(best.read_text())["global_step"] == 4
    capsys.readouterr()
    _train(tiny_recipe_path, _short(overrides, 5), resume=True)  # the same prompts: `best` is compared as before
    assert "measured otherwise" not in capsys.readouterr().err
    eval_file.write_text("an old map of a harbour city with ships\nthree lemons in a bowl\n")
    _train(tiny_recipe_path, _short(overrides, 6), resume=True)
    assert json.loads(best.read_text())["global_step"] == 6
    err = capsys.readouterr().err
    said = f"(data.eval: the prompts in {eval_file} are not the ones it was evaluated on)"
    assert f"note: the eval loss is measured otherwise from here on {said}" in err, err

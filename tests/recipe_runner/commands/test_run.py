"""`recipe run` says the recipe's warnings first, and refuses, before training, an output.dir whose `export/` holds
something else than an export."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from recipe_runner.cli import main

TINY = Path(__file__).resolve().parents[3] / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"


def test_a_users_export_folder_is_kept_and_nothing_is_trained(tmp_path):
    (tmp_path / "run" / "export").mkdir(parents=True)
    (tmp_path / "run" / "export" / "README.md").write_text("my notes")
    result = CliRunner().invoke(main, ["run", str(TINY), "--set", f"output.dir={tmp_path / 'run'}"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.stderr.startswith(f"error: {tmp_path / 'run' / 'export'} is a directory but not a previous export")
    assert (tmp_path / "run" / "export" / "README.md").read_text() == "my notes"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["export"], "refused before training"


def test_the_recipes_warnings_come_first_with_their_place(tmp_path):
    """Said before anything is loaded: here a refused export folder then stops the run before training."""
    (tmp_path / "run" / "export").mkdir(parents=True)
    (tmp_path / "run" / "export" / "notes.txt").write_text("mine")
    sets = ["--set", f"output.dir={tmp_path / 'run'}", "--set", "stages.0.trainable=[bolt_on]"]
    result = CliRunner().invoke(main, ["run", str(TINY), *sets])
    assert result.exit_code == 1, result.output
    first = result.stderr.splitlines()[0]
    assert first.startswith("warning: ") and "t5_to_qwen_tiny.yaml:39:" in first and "lr.student: unused" in first


def test_without_a_progress_bar_each_metrics_row_is_a_line_of_the_log(tmp_path):
    """A run under nohup or a scheduler logs with --no-progress: its loss, learning rate per part and evaluations
    reach the log file as lines, the headline figures of metrics.jsonl."""
    import json

    sets = [
        f"output.dir={tmp_path / 'run'}",
        f"teacher.cache.dir={tmp_path / 'cache'}",
        "stages.0.epochs=null",
        "stages.0.steps=4",
        "stages.0.warmup_steps=0",
        "output.log_every_steps=2",
        "output.eval_every_steps=4",
        "output.export=false",
    ]
    result = CliRunner().invoke(main, ["run", str(TINY), "--no-progress", *(a for s in sets for a in ("--set", s))])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.startswith("step ")]
    assert [line.split(":")[0] for line in lines] == [
        "step 0 (distill)",
        "step 2 (distill 2/4)",
        "step 4 (distill 4/4)",
        "step 4 (distill)",
    ], lines
    rows = [json.loads(row) for row in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    trained = next(row for row in rows if row["step"] == 2)
    assert set(trained) >= {"loss", "lr/student", "lr/bolt_on"}  # named by part, as the recipe names them
    assert lines[1].endswith(f"lr/student {trained['lr/student']:.4g}, lr/bolt_on {trained['lr/bolt_on']:.4g}")
    assert lines[3].startswith("step 4 (distill): eval/loss ") and "eval/terms/" not in lines[3]


def test_an_interrupt_while_the_teacher_answers_keeps_them_and_names_the_command_that_goes_on(tmp_path, monkeypatch):
    import shlex

    from recipe_runner import teacher_answers

    real_write = teacher_answers.write_answers

    def stopped_after_the_first_batch(directory, split, prompts, identity, answer_batch, batch_size, progress, known):
        def answer(start, batch):
            if start > 0:
                raise KeyboardInterrupt  # Ctrl-C (or a scheduler's SIGTERM) during the second batch
            return answer_batch(start, batch)

        return real_write(directory, split, prompts, identity, answer, batch_size, progress, known)

    recipe = TINY.with_name("qwen_sequence_kd_tiny.yaml")
    sets = [
        f"output.dir={tmp_path / 'run'}",
        f"teacher.answers.dir={tmp_path / 'answers'}",
        "teacher.answers.batch_size=8",
        "teacher.answers.max_new_tokens=4",
        f"data.train={{path: {TINY.parents[2] / 'data' / 'prompts' / 'train.txt'}, limit: 24}}",
        "stages.0.epochs=null",
        "stages.0.steps=2",
    ]
    args = ["run", str(recipe), *(a for s in sets for a in ("--set", s))]
    monkeypatch.setattr(teacher_answers, "write_answers", stopped_after_the_first_batch)
    stopped = CliRunner().invoke(main, [*args, "--no-progress"])
    assert stopped.exit_code == 130, stopped.output
    said = stopped.stderr.strip().splitlines()[-1]
    assert said.startswith("interrupted before the first training step; the teacher answers written so far are kept")
    assert shlex.split(said.split("`")[1]) == ["recipe", *args]
    assert len((tmp_path / "answers" / "train.jsonl.partial").read_text().splitlines()) == 8
    monkeypatch.setattr(teacher_answers, "write_answers", real_write)
    again = CliRunner().invoke(main, [*shlex.split(said.split("`")[1])[1:], "--no-progress"])
    assert again.exit_code == 0, again.output
    assert len((tmp_path / "answers" / "train.jsonl").read_text().splitlines()) == 24

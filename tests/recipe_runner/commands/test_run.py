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

"""`recipe run` refuses, before training, an output.dir whose `export/` holds something else than an export."""

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

"""The command group's own exits: what every verb does when its output cannot be written."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from recipe_runner.cli import EXIT_BROKEN_PIPE, main

TINY = Path(__file__).resolve().parents[2] / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"


def test_a_reader_that_goes_away_ends_the_output_without_an_error_message() -> None:
    """`recipe show FILE | head -1`: the pipe closes before the rest is written; a shell's code, no `error:`."""
    show = subprocess.Popen(
        [sys.executable, "-m", "recipe_runner.cli", "show", str(TINY)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    show.stdout.close()  # long before the recipe is printed: every write meets a closed pipe
    _, err = show.communicate(timeout=120)
    assert show.returncode == EXIT_BROKEN_PIPE, err
    assert err == b""


def test_under_a_launcher_of_several_processes_a_one_process_verb_runs_once(monkeypatch):
    tiny = str(TINY.with_name("qwen_logits_tiny.yaml"))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    other = CliRunner().invoke(main, ["validate", tiny])
    assert other.exit_code == 0 and other.output == ""  # said and done by the first process alone
    monkeypatch.setenv("RANK", "0")
    first = CliRunner().invoke(main, ["validate", tiny])
    assert first.exit_code == 0 and first.stdout.endswith(": ok\n"), first.output
    assert first.stderr.startswith("note: `recipe validate` runs in one process; the others of this launch left")

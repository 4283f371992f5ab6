"""`recipe cache` says which damaged shard it rewrote and why, instead of counting it as done."""

from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from recipe_runner.cli import main

ROOT = Path(__file__).resolve().parents[3]
TINY = ROOT / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"
PROMPTS = ROOT / "data" / "prompts"


def test_a_truncated_shard_is_rewritten_and_named(tmp_path):
    sets = [
        f"teacher.cache.dir={tmp_path / 'cache'}",
        "teacher.cache.shard_size=4",
        f"output.dir={tmp_path / 'run'}",
        f"data.train={{path: {PROMPTS / 'train.txt'}, limit: 10}}",
        "data.eval=null",
    ]
    args = ["cache", str(TINY), "--no-progress", *[arg for value in sets for arg in ("--set", value)]]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    victim = tmp_path / "cache" / "train" / "shard-00001.safetensors"
    os.truncate(victim, 100)

    again = CliRunner().invoke(main, args)

    assert again.exit_code == 0, again.output
    lines = again.stdout.splitlines()
    assert lines[0].startswith(f"train: rewrote damaged shard {victim} (it is cut short"), lines
    assert "train: 10 prompts, 1 shard(s) written" in lines[1]

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
    checked = CliRunner().invoke(main, args)
    assert checked.stdout.startswith("train: 10 prompts, complete: 3 shard(s) already there (headers and sizes")
    verified = CliRunner().invoke(main, [*args, "--verify"])
    assert "complete: 3 shard(s) already there (every value checked against its SHA-256)" in verified.stdout


def test_two_processes_share_the_shards_and_write_what_one_would(tmp_path):
    """Under torchrun each process encodes every other shard; the cache is the one a single process writes, and
    a damaged shard of the other process's share is rewritten by that process. One launch shows both: the eval
    split is written from nothing, the train split goes on from a cache with shards missing and one cut short."""
    import shutil
    import subprocess
    import sys

    import torch
    from safetensors.torch import load_file

    def sets(cache: Path) -> list[str]:
        values = [
            f"teacher.cache.dir={cache}",
            "teacher.cache.shard_size=16",
            f"output.dir={tmp_path / 'run'}",
            f"data.train={{path: {PROMPTS / 'train.txt'}, limit: 70}}",
            f"data.eval={{path: {PROMPTS / 'eval.txt'}, limit: 20}}",
        ]
        return [arg for value in values for arg in ("--set", value)]

    alone = CliRunner().invoke(main, ["cache", str(TINY), "--no-progress", *sets(tmp_path / "one")])
    assert alone.exit_code == 0, alone.output
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    shutil.rmtree(tmp_path / "two" / "eval")
    for gone in (1, 2, 4):  # one of process 1's share (odd shards), two of process 0's
        (tmp_path / "two" / "train" / f"shard-{gone:05d}.safetensors").unlink()
    victim = tmp_path / "two" / "train" / "shard-00003.safetensors"  # process 1's share
    os.truncate(victim, 100)

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    command = [*launch, "-m", "recipe_runner.cli", "cache", str(TINY), "--no-progress", *sets(tmp_path / "two")]
    shared = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert shared.returncode == 0, shared.stderr[-3000:]
    assert f"train: rewrote damaged shard {victim}" in shared.stdout
    assert shared.stdout.count("train: 70 prompts, 4 shard(s) written") == 1  # both shares, said once
    assert shared.stdout.count("eval: 20 prompts, 2 shard(s) written") == 1
    for split in ("train", "eval"):
        one = sorted((tmp_path / "one" / split).glob("shard-*.safetensors"))
        two = sorted((tmp_path / "two" / split).glob("shard-*.safetensors"))
        assert [p.name for p in one] == [p.name for p in two] and one
        for a, b in zip(one, two, strict=True):
            first, second = load_file(a), load_file(b)
            assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)

    from recipe_runner.teacher_cache import CACHE_LOCK
    from recipe_runner.trainer.run_dir import DirectoryLock

    held = DirectoryLock(tmp_path / "two", CACHE_LOCK, "recipe cache").acquire()  # as another `recipe cache`
    try:
        refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    finally:
        held.release()
    assert refused.returncode != 0
    assert "is in use by another `recipe cache`" in refused.stderr  # the first process's own message
    assert "the first process of this launch could not lock it" in refused.stderr  # the other stops as well
    assert "Connection closed" not in refused.stderr  # not a collective that the first process never joined


def test_an_interrupted_cache_names_the_command_that_goes_on_and_keeps_its_shards(tmp_path, monkeypatch):
    import shlex

    from components.cache import writer

    sets = [
        f"teacher.cache.dir={tmp_path / 'cache dir'}",
        "teacher.cache.shard_size=4",
        f"data.train={{path: {PROMPTS / 'train.txt'}, limit: 10}}",
        "data.eval=null",
    ]
    args = ["cache", str(TINY), *[arg for value in sets for arg in ("--set", value)], "--verify"]
    real_save = writer.save_safetensors_atomic

    def interrupted_on_second(final, tensors, metadata=None):
        if final.name == writer.shard_name(1):
            raise KeyboardInterrupt
        real_save(final, tensors, metadata=metadata)

    monkeypatch.setattr(writer, "save_safetensors_atomic", interrupted_on_second)
    stopped = CliRunner().invoke(main, [*args, "--no-progress"])

    assert stopped.exit_code == 130, stopped.output
    said = stopped.stderr.strip().splitlines()[-1]
    assert said.startswith("interrupted: the finished shards are kept; `"), said
    line = said.split("`")[1]
    assert shlex.split(line) == ["recipe", *args]  # the --set values, quoted, and the --verify of this one
    monkeypatch.setattr(writer, "save_safetensors_atomic", real_save)
    again = CliRunner().invoke(main, [*shlex.split(line)[1:], "--no-progress"])
    assert again.exit_code == 0, again.output
    assert "train: 10 prompts, 2 shard(s) written" in again.stdout  # shard 0 was kept

"""Loader workers that could not pass batches back are refused before a run depends on them: with a TMPDIR too
long for a socket address, a worker's batches were dropped by its queue thread and the run waited forever."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from recipe_runner.loader import load_recipe
from recipe_runner.trainer import loader_workers
from recipe_runner.trainer.batch_plan import batch_loader
from recipe_runner.trainer.loader_workers import LoaderWorkersError, require_worker_sockets, worker_socket_problem
from recipe_runner.trainer.loop import Trainer

REPO = Path(__file__).parents[3]
TINY = REPO / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"


def test_this_machine_can_bind_a_worker_socket_and_leaves_none_behind() -> None:
    from multiprocessing.util import get_temp_dir

    before = set(os.listdir(get_temp_dir()))
    assert worker_socket_problem() is None
    assert set(os.listdir(get_temp_dir())) == before


def test_a_socket_path_too_long_is_named_with_its_length_and_both_ways_out(tmp_path, monkeypatch) -> None:
    long_name = tmp_path / ("x" * 120)
    monkeypatch.setattr(loader_workers, "arbitrary_address", lambda family: str(long_name))
    problem = worker_socket_problem()
    assert problem is not None and "AF_UNIX path too long" in problem
    assert f"path too long: a socket path there has {len(str(long_name))} bytes, Linux takes at most 107" in problem
    assert "TMPDIR=/tmp recipe run" in problem and "hardware.num_workers: 0" in problem
    with pytest.raises(LoaderWorkersError, match="AF_UNIX path too long"):
        batch_loader(
            [],
            [],
            lambda items: items,
            load_recipe(TINY).recipe.hardware.model_copy(update={"num_workers": 2}),
            torch.device("cpu"),
        )
    require_worker_sockets(0)  # no workers: nothing is asked of the machine


def test_a_run_with_workers_is_refused_before_its_models_load(tmp_path, monkeypatch) -> None:
    from recipe_runner.trainer import loop

    monkeypatch.setattr(loader_workers, "arbitrary_address", lambda family: str(tmp_path / ("x" * 120)))
    monkeypatch.setattr(loop, "build_parts", lambda *a, **k: pytest.fail("models were loaded"))
    overrides = [f"output.dir={tmp_path / 'run'}", f"teacher.cache.dir={tmp_path / 'cache'}", "hardware.num_workers=2"]
    with pytest.raises(LoaderWorkersError, match="set TMPDIR to a short writable folder"):
        Trainer(load_recipe(TINY, overrides, check=False).recipe, progress=False)


@pytest.mark.slow
def test_validate_names_num_workers_under_a_real_tmpdir_too_long_for_a_socket(tmp_path) -> None:
    """As the CLI runs, in a process of its own: multiprocessing keeps the first temporary folder it made."""
    tmpdir = tmp_path / ("long-cluster-scratch-folder-" * 3)
    tmpdir.mkdir()
    command = [
        sys.executable,
        "-m",
        "recipe_runner.cli",
        "validate",
        str(TINY),
        "--set",
        "hardware.num_workers=2",
        "--set",
        f"output.dir={tmp_path / 'run'}",
        "--set",
        f"teacher.cache.dir={tmp_path / 'cache'}",
    ]
    done = subprocess.run(
        command, env={**os.environ, "TMPDIR": str(tmpdir)}, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "hardware.num_workers" in done.stderr and "AF_UNIX path too long" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr

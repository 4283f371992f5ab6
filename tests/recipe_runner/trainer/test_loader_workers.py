"""Loader workers that could not pass batches back are refused before a run depends on them: with a TMPDIR too
long for a socket address, or a /dev/shm too small for a batch, a worker's batches were dropped by its queue
thread and the run waited forever."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from recipe_runner.cli import main
from recipe_runner.loader import load_recipe
from recipe_runner.plan import build_plan
from recipe_runner.trainer import loader_workers
from recipe_runner.trainer.batch_plan import batch_loader
from recipe_runner.trainer.loader_workers import (
    LoaderWorkersError,
    loader_batch_bytes,
    require_worker_sockets,
    shared_memory_shortfall,
    worker_socket_problem,
)
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


HEADLINE = REPO / "recipes" / "t5_to_qwen.yaml"
MIB = 2**20


@pytest.fixture
def container_shm(monkeypatch: pytest.MonkeyPatch) -> None:
    """/dev/shm as `docker run` leaves it without --shm-size: 64 MB."""
    import shutil

    real = shutil.disk_usage
    monkeypatch.setattr(
        loader_workers.shutil,
        "disk_usage",
        lambda path: shutil._ntuple_diskusage(64 * MIB, 0, 64 * MIB) if str(path) == "/dev/shm" else real(path),
    )


def test_the_headline_batch_is_counted_with_its_cached_teacher_rows() -> None:
    recipe = load_recipe(HEADLINE).recipe  # 16 prompts of up to 512 tokens, T5-XXL rows 4096 wide in bfloat16
    assert loader_batch_bytes(recipe, 4096) == 16 * 512 * 4096 * 2 + 16 * 512 * 64
    uncached = load_recipe(HEADLINE, ["teacher.cache=null"]).recipe  # the teacher runs in the step
    assert loader_batch_bytes(uncached, 4096) == 16 * 512 * 64


def test_a_container_shm_too_small_for_one_batch_is_a_validate_problem_at_num_workers(container_shm) -> None:
    result = CliRunner().invoke(main, ["validate", str(HEADLINE)])
    assert result.exit_code == 2, result.output
    assert "t5_to_qwen.yaml:68:3: hardware.num_workers: loader workers hand batches over in shared memory" in (
        result.output
    )
    assert "has 64.0 MiB free; one batch of this recipe takes up to 64.5 MiB" in result.output
    assert "4 workers hold up to 9 at once" in result.output and "`docker run --shm-size=1g` or `--ipc=host`" in (
        result.output
    )
    assert CliRunner().invoke(main, ["validate", str(HEADLINE), "--set", "hardware.num_workers=0"]).exit_code == 0


def test_batches_that_fit_one_at_a_time_but_not_all_in_flight_are_a_plan_warning(container_shm, tmp_path) -> None:
    overrides = [f"output.dir={tmp_path / 'run'}", "hardware.num_workers=4", "hardware.batch_size=4"]
    recipe = load_recipe(HEADLINE, overrides).recipe  # validated: one batch (16.1 MiB) fits
    warnings = [w for w in build_plan(recipe).warnings if "shared memory" in w]
    assert len(warnings) == 1 and "up to 16.1 MiB" in warnings[0] and "hold up to 9 at once" in warnings[0]
    assert shared_memory_shortfall(recipe, 4096, batches=3) is None


def test_a_run_is_refused_before_loading_when_one_batch_cannot_fit(container_shm, tmp_path, monkeypatch) -> None:
    from recipe_runner.trainer import loop, preflight

    monkeypatch.setattr(preflight, "require_downloaded", lambda *a, **k: None)  # the hub models are not here
    monkeypatch.setattr(loop, "build_parts", lambda *a, **k: pytest.fail("models were loaded"))
    recipe = load_recipe(HEADLINE, [f"output.dir={tmp_path / 'run'}"], check=False).recipe
    with pytest.raises(LoaderWorkersError, match="one batch of this recipe takes up to 64.5 MiB"):
        Trainer(recipe, progress=False)


@pytest.mark.parametrize(
    ("workers", "processes", "cores", "said"),
    [
        (2, 1, 2, None),
        (3, 1, 2, "hardware.num_workers is 3, but this run may use 2 CPU core(s)"),
        (4, 2, 16, None),
        (4, 4, 8, "hardware.num_workers is 4 in each of 4 processes, but this run may use 8 CPU core(s)"),
    ],
)
def test_more_workers_than_cores_is_said_in_the_recipes_words(workers, processes, cores, said) -> None:
    note = loader_workers.more_workers_than_cores(workers, processes, cores)
    assert note is None if said is None else said in note
    if note:
        assert note.endswith(f"{max(0, cores // processes - 1)} leaves a core to training")


def test_torchs_own_worker_count_warning_is_not_printed_by_each_loader() -> None:
    """It came twice a loader (as it is made and as it is read), in torch's words; the run says it once."""
    import warnings

    from schemas.hardware import Hardware

    many = os.cpu_count() * 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        batches = batch_loader(list(range(4)), [[0, 1], [2, 3]], list, Hardware(num_workers=many), torch.device("cpu"))
        assert [len(batch) for batch in batches] == [2, 2]
    assert not [w for w in caught if "DataLoader will create" in str(w.message)]

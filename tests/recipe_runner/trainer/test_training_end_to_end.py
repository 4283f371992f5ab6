"""Real tiny training through the CLI: quality rises, runs resume after SIGKILL, Ctrl-C saves, DDP works.

Runs that stop on a failure are in test_failure_stops.py."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file
from short_runs import short_run

from recipe_runner.cli import main
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.checkpoint import STEP_DIR, step_checkpoints
from recipe_runner.trainer.checksums import SUMS
from recipe_runner.trainer.loop import Trainer
from recipe_runner.trainer.parts import RunSetupError

pytestmark = pytest.mark.slow


def _recipe_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "recipe_runner.cli", *args]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def test_tiny_recipe_learns_and_exports(tiny_recipe_path, tiny_overrides, tmp_path):
    from components.export import DistilledEncoder

    # 7 of the recipe's 10 epochs: enough to pass the bar, in two thirds of the suite's longest test
    overrides = [*tiny_overrides, "stages.0.epochs=7"]
    summary = Trainer(load_recipe(tiny_recipe_path, overrides).recipe, progress=False).run()
    run_dir = tmp_path / "run"
    evals = [m for m in _metrics(run_dir) if "eval/aligned_cosine" in m]
    assert evals[0]["step"] == 0 and evals[0]["eval/aligned_cosine"] < 0.5
    assert summary.metrics["eval/aligned_cosine"] >= 0.8, summary.metrics
    assert (run_dir / "resolved_recipe.yaml").is_file() and (run_dir / "versions.json").is_file()
    assert (run_dir / "checkpoints" / "best" / "trainer_state.json").is_file()
    encoder = DistilledEncoder.load(summary.export_dir)
    embeds, mask = encoder.encode(["a red fox in snow", "a cat"])
    assert embeds.shape[-1] == 64 and mask.dtype == torch.bool
    assert mask.sum(1).tolist()[0] > mask.sum(1).tolist()[1]


def _set_args(overrides: list[str]) -> list[str]:
    return [arg for value in overrides for arg in ("--set", value)]


def _start_run(recipe: Path, sets: list[str]) -> subprocess.Popen:
    """`recipe run` in its own process group, so that a test can kill or interrupt it as a terminal does."""
    return subprocess.Popen(
        _recipe_cmd("run", str(recipe), "--no-progress", *sets),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _wait_for_checkpoint(proc: subprocess.Popen, root: Path, at_least: int, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        done = [int(STEP_DIR.match(p.name).group(1)) for p in step_checkpoints(root)]
        if done and max(done) >= at_least:
            return
        if proc.poll() is not None:
            raise AssertionError(f"run ended early: {proc.communicate()}")
        time.sleep(0.05)
    raise AssertionError("no checkpoint appeared in time")


def _final_loss(run_dir: Path) -> float:
    return [m for m in _metrics(run_dir) if "loss" in m][-1]["loss"]


def test_sigkill_then_resume_reaches_same_final_step(tiny_recipe_path, tiny_overrides, tmp_path):
    overrides = short_run(tiny_overrides, steps=40, save_every=10)
    sets = _set_args(overrides)
    run_dir = tmp_path / "run"
    proc = _start_run(tiny_recipe_path, sets)
    _wait_for_checkpoint(proc, run_dir / "checkpoints", at_least=20)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # Whatever the kill interrupted, every directory under a final name is complete.
    for entry in (run_dir / "checkpoints").iterdir():
        if STEP_DIR.match(entry.name):
            assert (entry / "trainer_state.json").is_file(), entry
    killed_at = int(STEP_DIR.match(step_checkpoints(run_dir / "checkpoints")[-1].name).group(1))
    assert killed_at < 40

    refused = CliRunner().invoke(main, ["run", str(tiny_recipe_path), "--no-progress", *sets])
    assert refused.exit_code == 1, refused.output
    offered = refused.stderr.split("use `")[1].split("`")[0]  # this very command, with --resume
    assert shlex.split(offered) == ["recipe", "run", str(tiny_recipe_path), *sets, "--resume"]

    resumed = subprocess.run(
        _recipe_cmd("run", str(tiny_recipe_path), "--no-progress", "--resume", *sets),
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from {run_dir / 'checkpoints' / f'step-{killed_at:08d}'} (" in resumed.stderr
    assert "finished at step 40" in resumed.stdout
    steps_logged = [m["step"] for m in _metrics(run_dir) if "loss" in m]
    assert steps_logged[-1] == 40

    # The resumed run is the same computation as one that was never interrupted.
    straight = tmp_path / "straight"
    Trainer(load_recipe(tiny_recipe_path, [*overrides, f"output.dir={straight}"]).recipe, progress=False).run()
    assert _final_loss(run_dir) == pytest.approx(_final_loss(straight), rel=1e-4)


def test_ctrl_c_saves_a_checkpoint_and_exits_cleanly(tiny_recipe_path, tiny_overrides, tmp_path):
    """Ctrl-C in a terminal reaches the whole process group, the data loader's worker included: one process
    saves and says so."""
    overrides = [*short_run(tiny_overrides, steps=400, save_every=20), "hardware.num_workers=1"]
    sets = _set_args(overrides)
    proc = _start_run(tiny_recipe_path, sets)
    _wait_for_checkpoint(proc, tmp_path / "run" / "checkpoints", at_least=20)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "interrupted at step" in err and "Traceback" not in err
    assert err.count("stopping after the step or evaluation in progress") == 1, err
    interrupted = int(err.split("interrupted at step ")[1].split(";")[0])
    assert any(p.name == f"step-{interrupted:08d}" for p in step_checkpoints(tmp_path / "run" / "checkpoints"))
    # The command offered is this run's, --set values and all: the recipe file alone names another run.
    offered = err.split("continue with `")[1].split("`")[0]
    assert shlex.split(offered) == ["recipe", "run", str(tiny_recipe_path), *sets, "--resume"]


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no hangups on this platform")
def test_a_dropped_terminal_saves_a_checkpoint_and_exits(tiny_recipe_path, tiny_overrides, tmp_path):
    """An ssh session that drops hangs up the terminal of a run inside it: SIGHUP, then every write to that
    terminal fails. The run saves and exits rather than dying at once or on its next progress-bar write."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    try:
        leader, follower = pty.openpty()
    except OSError as exc:  # a container without /dev/ptmx
        pytest.skip(f"no pseudo-terminal here: {exc}")
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))  # 80 columns: the bar draws
    sets = _set_args(short_run(tiny_overrides, steps=2000, save_every=20))
    proc = subprocess.Popen(  # with its progress bar, writing to the terminal
        _recipe_cmd("run", str(tiny_recipe_path), *sets), env=_env(), stdout=follower, stderr=follower
    )
    os.close(follower)
    drained = []
    try:
        root = tmp_path / "run" / "checkpoints"
        deadline = time.time() + 120
        while not [p for p in step_checkpoints(root) if p.name >= "step-00000020"] and time.time() < deadline:
            if select.select([leader], [], [], 0.1)[0]:  # a terminal that nobody reads fills up and blocks
                drained.append(os.read(leader, 65536))
            assert proc.poll() is None, b"".join(drained)[-2000:]
        proc.send_signal(signal.SIGHUP)
        os.close(leader)  # the terminal is gone: writes to it now fail with EIO
        leader = None
        assert proc.wait(timeout=60) == 130
    finally:
        if leader is not None:
            os.close(leader)
        if proc.poll() is None:
            proc.kill()
    saved = step_checkpoints(tmp_path / "run" / "checkpoints")
    assert saved[-1].name > "step-00000020"  # saved where the hangup stopped it, not only the scheduled one


def test_a_reader_of_the_output_that_goes_away_stops_the_run_with_a_checkpoint(
    tiny_recipe_path, tiny_overrides, tmp_path
):
    """`recipe run ... | head`, or a `tee` killed: each later write fails with EPIPE. It ended the run at once,
    with every step since the last checkpoint lost; now it stops as a hangup does."""
    sets = [*_set_args(short_run(tiny_overrides, steps=2000, save_every=1000)), "--set", "output.log_every_steps=2"]
    proc = subprocess.Popen(
        _recipe_cmd("run", str(tiny_recipe_path), "--no-progress", *sets),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        seen = b""
        while b"step 4 (" not in seen:  # training is under way
            chunk = proc.stdout.read1(4096)
            assert chunk, seen[-2000:]
            seen += chunk
        proc.stdout.close()  # the reader goes away
        assert proc.wait(timeout=60) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
    [saved] = step_checkpoints(tmp_path / "run" / "checkpoints")
    assert saved.name >= "step-00000004"  # where the lost output stopped it; none was scheduled before step 1000


def test_grad_accum_updates_once_per_step_with_the_gradients_of_every_micro_batch(
    tiny_recipe_path, tiny_overrides, monkeypatch
):
    from recipe_runner.trainer.parts import DistillModel

    overrides = [*short_run(tiny_overrides, steps=3, save_every=10), "hardware.grad_accum=2", "hardware.batch_size=8"]
    calls = {"forward": 0, "update": 0}
    forward, update = DistillModel.forward, torch.optim.AdamW.step

    def counted_forward(self, *args, **kwargs):
        calls["forward"] += self.training
        return forward(self, *args, **kwargs)

    def counted_update(self, *args, **kwargs):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        assert grads, "an update without gradients"
        calls["update"] += 1
        return update(self, *args, **kwargs)

    monkeypatch.setattr(DistillModel, "forward", counted_forward)
    monkeypatch.setattr(torch.optim.AdamW, "step", counted_update)
    assert Trainer(load_recipe(tiny_recipe_path, overrides).recipe, progress=False).run().global_step == 3
    assert calls == {"forward": 6, "update": 3}


def test_a_token_budget_fills_every_batch_up_to_it_and_sets_the_step_count(
    tiny_recipe_path, tiny_overrides, monkeypatch
):
    from recipe_runner.trainer.parts import DistillModel

    budget = 256
    overrides = [*tiny_overrides, "stages.0.epochs=2", "hardware.batch_size=64", f"hardware.batch_tokens={budget}"]
    recipe = load_recipe(tiny_recipe_path, overrides).recipe
    shapes = {"train": [], "eval": []}
    original = DistillModel.forward

    def records(self, input_ids, mask, packing=None):
        shapes["train" if self.training else "eval"].append(tuple(input_ids.shape))
        return original(self, input_ids, mask, packing)

    monkeypatch.setattr(DistillModel, "forward", records)
    trainer = Trainer(recipe, progress=False)
    epochs = [trainer.batches.epoch_order(0, epoch) for epoch in (0, 1)]
    summary = trainer.run()
    assert summary.global_step == trainer.batches.total_steps(0, recipe.stages[0]) == sum(map(len, epochs))
    for prompts, length in shapes["train"] + shapes["eval"]:
        assert prompts <= 64 and (prompts == 1 or prompts * length <= budget)
    # The budget, not the prompt cap, closes the batches: short prompts go more than 16 to a batch.
    assert max(prompts for prompts, _ in shapes["train"]) > 16
    assert len(shapes["train"]) == summary.global_step
    assert math.isfinite(summary.metrics["eval/loss"])


def test_existing_checkpoints_are_not_overwritten(tiny_recipe_path, tiny_overrides, tmp_path):
    recipe = load_recipe(tiny_recipe_path, short_run(tiny_overrides, steps=2, save_every=1)).recipe
    Trainer(recipe, progress=False).run()
    with pytest.raises(RunSetupError, match="--resume"):
        Trainer(recipe, progress=False)


def _two_processes(recipe: Path, sets: list[str]) -> list[str]:
    """`recipe run` in two DDP processes on the CPU (gloo). torchrun, not `accelerate launch --cpu`: that one
    starts a single process unless it is given an MPI host file."""
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "recipe_runner.cli", "run", str(recipe), "--no-progress", *sets, "--set", "hardware.distributed=ddp",
    ]  # fmt: skip


def test_two_process_ddp_run(tiny_recipe_path, tiny_overrides, tmp_path):
    """Also saves by the clock at every logging step: the processes must agree on each save, or they hang. The
    student's states are taken before its last layer, which (and the final norm) then gets no gradient: DDP
    stopped at the second step waiting for it."""
    tiny_overrides = [*tiny_overrides, "student.layer=-2"]
    timed = ["output.save_every_minutes=1e-9", "output.log_every_steps=2"]
    sets = _set_args([*short_run(tiny_overrides, steps=6, save_every=1000), *timed])
    done = subprocess.run(
        _two_processes(tiny_recipe_path, sets), env=_env(), capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "training on 2 processes (cpu)" in done.stderr
    assert done.stdout.count("finished at step 6") == 1  # said once, by the main process
    saved = [path.name for path in step_checkpoints(tmp_path / "run" / "checkpoints")]
    assert saved == ["step-00000002", "step-00000004", "step-00000006"]
    streams = load_file(tmp_path / "run" / "checkpoints" / saved[0] / "rng.safetensors")
    assert not torch.equal(streams["torch_cpu"], streams["rank1/torch_cpu"]), "each process draws its own numbers"
    logged = [m for m in _metrics(tmp_path / "run") if "loss" in m]
    assert [m["step"] for m in logged] == [2, 4, 6] and all(math.isfinite(m["loss"]) for m in logged)

    # Each process evaluated half of the eval batches; together they measure what one process measures alone.
    alone = load_recipe(
        tiny_recipe_path,
        [*short_run(tiny_overrides, steps=1, save_every=1000), "output.dir=" + str(tmp_path / "alone")],
    ).recipe
    Trainer(alone, progress=False).run()
    first_eval = [next(m for m in _metrics(tmp_path / where) if "eval/loss" in m) for where in ("run", "alone")]
    assert first_eval[0]["step"] == first_eval[1]["step"] == 0
    for key, value in first_eval[1].items():
        if key.startswith("eval/"):
            assert first_eval[0][key] == pytest.approx(value, rel=1e-5), key

    # One process goes on where the two stopped: each had taken 6 batches of its half of the epoch.
    more = _set_args([*short_run(tiny_overrides, steps=8, save_every=1000), *timed])
    resumed = subprocess.run(
        _recipe_cmd(
            "run", str(tiny_recipe_path), "--no-progress", "--resume", *more, "--set", "hardware.distributed=ddp"
        ),
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "training on 1 process (cpu)" in resumed.stderr
    assert "continues at batch 12 instead of 6" in resumed.stderr and "finished at step 8" in resumed.stdout
    assert "processes: 2 -> 1 (an optimizer step takes up to " in resumed.stderr  # half the prompts a step


def _killed_and_resumed(tmp_path: Path, recipe: Path, overrides: list[str], steps: int, save_every: int, sets):
    """A run to `steps` in run/; its last checkpoint moves to uninterrupted/ and `best` and the export go, as if
    killed after the checkpoint before; a resumed run then trains the last steps again. Returns the moved
    checkpoint, the one the resume went on from, and what the resume said on stderr."""
    resolved = [*short_run(overrides, steps, save_every), *sets]
    Trainer(load_recipe(recipe, resolved).recipe, progress=False).run()
    run_dir = tmp_path / "run"
    checkpoints = step_checkpoints(run_dir / "checkpoints")
    uninterrupted = tmp_path / "uninterrupted" / checkpoints[-1].name
    uninterrupted.parent.mkdir()
    shutil.move(checkpoints[-1], uninterrupted)
    for gone in (run_dir / "checkpoints" / "best", run_dir / "export"):
        shutil.rmtree(gone, ignore_errors=True)
    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        Trainer(load_recipe(recipe, resolved).recipe, resume=True, progress=False).run()
    return uninterrupted, checkpoints[-2], said.getvalue()


def test_bf16_stochastic_weights_train_and_resume(tiny_recipe_path, tiny_overrides, tmp_path):
    """bf16 weights, the stochastic-rounding AdamW's bf16 moments and step counts, and the generator its
    rounding draws from survive a resume: it ends bit for bit where an uninterrupted run does."""
    from safetensors.torch import load_file

    lowmem = ["hardware.precision=bf16", "hardware.trained_weights=bf16_stochastic"]
    whole, start, said = _killed_and_resumed(tmp_path, tiny_recipe_path, tiny_overrides, 30, 10, lowmem)
    assert f"resuming from {start} (" in said and start.name == "step-00000020"
    run_dir = tmp_path / "run"
    latest = step_checkpoints(run_dir / "checkpoints")[-1]
    assert latest.name == "step-00000030"
    assert {t.dtype for t in load_file(str(latest / "model.safetensors")).values()} == {torch.bfloat16}
    moments = load_file(str(latest / "optimizer.safetensors"))
    assert moments and {t.dtype for t in moments.values()} == {torch.bfloat16}
    steps = json.loads((latest / "state.json").read_text())["optimizer"]["scalars"]
    assert set(steps.values()) == {30}  # every parameter's step count went on across the resume
    for name in ("model.safetensors", "optimizer.safetensors"):
        first, again = load_file(str(whole / name)), load_file(str(latest / name))
        assert first.keys() == again.keys() and all(torch.equal(first[k], again[k]) for k in first), name
    losses = [m["loss"] for m in _metrics(run_dir) if "loss" in m]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]


def test_compiled_run_trains_checkpoints_and_resumes(tiny_recipe_path, tiny_overrides, compiled_tiny, tmp_path):
    """Blocks are compiled in place (and recomputed under checkpointing), so checkpoints hold the
    same keys and a resumed run loads them and ends where an uninterrupted one does."""
    from safetensors.torch import load_file

    whole, start, said = _killed_and_resumed(tmp_path, tiny_recipe_path, tiny_overrides, 8, 3, compiled_tiny)
    assert f"resuming from {start} (" in said and start.name == "step-00000006"
    run_dir = tmp_path / "run"
    checkpoints = step_checkpoints(run_dir / "checkpoints")
    assert checkpoints[-1].name == "step-00000008"
    keys = set(load_file(str(checkpoints[-1] / "model.safetensors")))
    assert keys == set(load_file(str(checkpoints[0] / "model.safetensors"))) and not any("_orig_mod" in k for k in keys)
    first = load_file(str(whole / "model.safetensors"))
    again = load_file(str(checkpoints[-1] / "model.safetensors"))
    for key in first:
        torch.testing.assert_close(first[key], again[key], msg=key)
    losses = [m["loss"] for m in _metrics(run_dir) if "loss" in m]
    assert all(math.isfinite(loss) for loss in losses)


def _worker_pids_of(launcher: int) -> dict[int, int]:
    """LOCAL_RANK -> pid of the training processes that a launcher (pid `launcher`) started."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    below, frontier = set(), {launcher}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - below
        below |= frontier
    workers: dict[int, int] = {}
    for pid in below:
        try:
            environ = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        for entry in environ:
            if entry.startswith(b"LOCAL_RANK="):
                workers[int(entry.split(b"=", 1)[1])] = pid
    return workers


@pytest.mark.skipif(not Path("/proc/self/environ").is_file(), reason="finds the workers through /proc")
def test_ddp_stops_together_when_one_process_gets_sigterm(tiny_recipe_path, tiny_overrides, tmp_path):
    """A scheduler may signal one process, or each at a slightly different step: they must still save one
    checkpoint together, not wait for each other forever, and soon: not at the next logging or saving step, which
    can be past the scheduler's grace period."""
    sets = _set_args([*short_run(tiny_overrides, steps=2000, save_every=50), "output.log_every_steps=1000"])
    proc = subprocess.Popen(
        _two_processes(tiny_recipe_path, sets), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        _wait_for_checkpoint(proc, tmp_path / "run" / "checkpoints", at_least=50, timeout=240)
        workers = _worker_pids_of(proc.pid)
        assert sorted(workers) == [0, 1], workers
        os.kill(workers[1], signal.SIGTERM)
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        raise AssertionError("the processes did not stop together: one waits for the other") from None
    finally:
        if proc.poll() is None:  # the workers first: killing torchrun alone would leave them running
            for pid in _worker_pids_of(proc.pid).values():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            proc.kill()
            proc.wait()
    assert "interrupted at step" in err, err[-3000:]
    offered = err.split("continue with `")[1].split("`")[0]  # launched again as this run was
    launch = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "recipe_runner.cli", "run"]
    rest = [str(tiny_recipe_path), *sets, "--set", "hardware.distributed=ddp", "--resume"]
    assert shlex.split(offered) == [*launch, *rest]
    assert proc.returncode != 0 and "exitcode: -6" not in err  # both stopped by the run, none aborted at exit
    interrupted = int(err.split("interrupted at step ")[1].split(";")[0])
    saved = [p.name for p in step_checkpoints(tmp_path / "run" / "checkpoints")]
    assert f"step-{interrupted:08d}" in saved and 50 < interrupted < 100  # within steps, not at the next save
    # The signalled process left only once the first had written the checkpoint's sums: torchrun ends the others
    # as soon as one exits, and had cut the first short (exit -15) with the sums unwritten.
    assert (tmp_path / "run" / "checkpoints" / f"step-{interrupted:08d}" / SUMS).is_file()
    assert "exitcode: -15" not in err

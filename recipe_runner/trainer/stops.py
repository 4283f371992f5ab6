"""Why a run stopped early, said so that nothing is lost: what failed, which checkpoint is intact, what to change."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from components.disk_space import bytes_under, size_in_words
from components.errors import UserFacingError
from recipe_runner.next_commands import NextCommands
from recipe_runner.stop_signals import stop_signals
from recipe_runner.trainer.checkpoint import COMPLETE, read_position, read_state, step_checkpoints
from recipe_runner.trainer.checksums import verify_checksums
from schemas import Recipe


class TrainingDiverged(UserFacingError, RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""

    alike_in_every_process = True  # a NaN loss: every process stops on the one decision they agreed


class TrainingOutOfMemory(UserFacingError, RuntimeError):
    """A batch did not fit on the device; the message names the batch and the settings that would make it fit."""


class CheckpointWriteError(UserFacingError, RuntimeError):
    """A checkpoint or the export could not be written (disk full, say); what was written before is intact."""


class DamagedCheckpoint(UserFacingError, RuntimeError):
    """The checkpoint to resume from cannot be read; earlier ones may still be whole."""

    alike_in_every_process = True  # every process reads the same checkpoint


class TrainingDataFailed(UserFacingError, RuntimeError):
    """Reading or preparing a batch failed; the steps before it are checkpointed."""


class ProcessLost(UserFacingError, RuntimeError):
    """Another process of the launch died (killed, or failed on its own); the last checkpoint is whole."""


class TrainingInterrupted(RuntimeError):
    """Ctrl-C, SIGTERM or a hangup: a checkpoint was saved and the run can be resumed."""


def _leave_the_terminal() -> None:
    """After a hangup every write to the terminal fails (EIO), and the progress bar's next write would stop the
    run before it saves: what the run still prints to a terminal goes nowhere instead (files and pipes stay)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in (1, 2):
            # A character device: isatty() already says no for a terminal that has hung up.
            with contextlib.suppress(OSError):
                if stat.S_ISCHR(os.fstat(fd).st_mode):
                    os.dup2(devnull, fd)
    finally:
        os.close(devnull)


class HangupTolerantStream:
    """An output stream of a run. A write that lands between a terminal's hangup and the SIGHUP handler (which
    moves the output away) fails with EIO, and is dropped rather than end the run before it saves. A reader that
    went away (`| head`, a `tee` killed) fails each write with EPIPE: the output goes nowhere from then on, and
    `lost` (a stop of the run, with its checkpoint) is called, as a hangup would."""

    def __init__(self, stream, lost: Callable[[], None] | None = None) -> None:
        self.stream, self.lost = stream, lost

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as exc:
            self._failed(exc)
            return 0

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as exc:
            with contextlib.suppress(OSError):
                self._failed(exc)

    def _failed(self, exc: OSError) -> None:
        if exc.errno == errno.EPIPE:
            devnull = os.open(os.devnull, os.O_WRONLY)
            with contextlib.suppress(OSError, ValueError, AttributeError):  # a stream without a descriptor
                os.dup2(devnull, self.stream.fileno())
            os.close(devnull)
            if self.lost is not None:
                self.lost()
        elif exc.errno != errno.EIO:
            raise exc

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


# Said as the signal lands, not knowing whether a step or an evaluation is in progress, nor whether anything was
# trained since the last checkpoint: the run's last line says what it saved.
_STOPPING = (
    b"\nstopping after the step or evaluation in progress, saving what was trained since the last checkpoint "
    b"(again: quit unsaved)\n"
)


class StopFlag:
    """Set by SIGINT, SIGTERM or SIGHUP; the loop checks it between optimizer steps, never mid-step.

    The data loader's workers are forked with this handler and get a terminal's Ctrl-C too (it goes to the whole
    process group): they ignore it and go on making batches for the step in progress, and the one process that
    saves is the one that speaks."""

    def __init__(self) -> None:
        self.raised = False
        self._previous: dict[int, object] = {}
        self._owner: int | None = None  # the process that installed the handlers

    def __enter__(self) -> StopFlag:
        self._owner = os.getpid()
        for sig in stop_signals():
            with contextlib.suppress(ValueError):  # not the main thread (e.g. inside some test runners)
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if signum == getattr(signal, "SIGHUP", None):
            _leave_the_terminal()
        if os.getpid() != self._owner:  # a loader worker: the main process stops it once it has saved
            return
        if self.raised:  # a second Ctrl-C means "now"
            raise KeyboardInterrupt
        self.raised = True
        if signum != getattr(signal, "SIGHUP", None) and os.environ.get("RANK", "0") == "0":
            # os.write: a print here could land inside the progress bar's own write to stderr (a reentrant call).
            with contextlib.suppress(OSError):
                os.write(2, _STOPPING)

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def output_lost(self) -> None:
        """The reader of the run's output went away: stop after the step in progress, as on a hangup (there is no
        one left to tell)."""
        if os.getpid() == self._owner:
            self.raised = True


@contextlib.contextmanager
def lost_output_stops(stop: StopFlag) -> Iterator[None]:
    """While training, stdout and stderr that lose their reader stop the run with a checkpoint: before, the first
    write after `| head` or a killed `tee` ended it at once, losing every step since the last checkpoint."""
    streams = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = (HangupTolerantStream(stream, stop.output_lost) for stream in streams)
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams


def last_checkpoint(checkpoints: Path, label: str) -> str:
    kept = step_checkpoints(checkpoints)
    return f"{label} is {kept[-1]}" if kept else "no checkpoint had been written yet"


def diverged(checkpoints: Path, step: int, stage: int, resume: str, what: str = "loss") -> TrainingDiverged:
    """`what` went NaN or infinite in stage index `stage` (the loss, which every process agrees on, or an on-policy
    stage's sampling probabilities, which only the processes that sampled at that step meet); the command line
    `resume` continues from the last checkpoint once a setting is changed."""
    stopped = TrainingDiverged(
        f"{what} became NaN or inf before step {step}; stopped without saving: "
        f"{last_checkpoint(checkpoints, 'the last good checkpoint')}. "
        "Lower the learning rate, use bf16 instead of fp16, or enable grad_clip, then continue from there with "
        f"`{resume}` and that change as one more --set (e.g. --set stages.{stage}.grad_clip=1.0)."
    )
    stopped.alike_in_every_process = what == "loss"
    return stopped


def out_of_memory(
    recipe: Recipe,
    checkpoints: Path,
    device: str,
    shape: tuple[int, ...] | None,
    step: int,
    during: str,
    commands: NextCommands,
) -> TrainingOutOfMemory:
    """What did not fit (in a training step or in an evaluation), what was kept, the settings that lower the
    peak, most effective first, and this run's own command lines that estimate, measure and continue."""
    hw = recipe.hardware
    padded = shape[0] * shape[1] if shape else None
    if hw.batch_tokens is None or (padded is not None and padded > hw.batch_tokens):
        first = f"lower hardware.batch_size (now {hw.batch_size})"
    else:
        this_batch = f"; this batch: {padded} padded tokens" if padded else ""
        first = f"lower hardware.batch_tokens (now {hw.batch_tokens}{this_batch})"
    training = during == "training"
    remedies = [first + (" and raise grad_accum to keep the step size" if training else "")]
    if training and not hw.gradient_checkpointing:
        remedies.append("set hardware.gradient_checkpointing: true")
    elif training and padded and hw.checkpoint_min_tokens is not None and padded < hw.checkpoint_min_tokens:
        remedies.append(
            f"lower hardware.checkpoint_min_tokens (now {hw.checkpoint_min_tokens}): this batch of "
            f"{padded} padded tokens kept its activations"
        )
    if hw.trained_weights == "fp32" and hw.precision == "bf16":
        remedies.append("set hardware.trained_weights: bf16_stochastic (half the optimizer memory)")
    length = f"; this batch: {shape[1]}" if shape else ""
    remedies.append(f"or lower student.max_length (now {recipe.student.max_length}{length})")
    where = f"at step {step}" if training else f"in the evaluation at step {step}"
    batch = f" on a batch of {shape[0]} prompts x {shape[1]} tokens" if shape else ""
    return TrainingOutOfMemory(
        f"out of {device} memory {where}{batch}; {last_checkpoint(checkpoints, 'the last checkpoint')}. To fit: "
        + "; ".join(remedies)
        + f". `{commands.command('plan')}` estimates the peak, `{commands.command('bench')}` measures it on the "
        f"largest batch; then continue with `{commands.resume}`."
    )


# What gloo says when the process at the other end of a collective is gone: torch raises these as plain
# RuntimeErrors, where NCCL's failures come as torch.distributed.DistError.
_PEER_GONE = ("Connection closed by peer", "Connection reset by peer", "/gloo/")


def lost_a_process(exc: BaseException, checkpoints: Path, resume: str) -> ProcessLost | None:
    """A collective that failed because another process of the launch is gone, in one line, with the checkpoint
    that is whole and the command that continues; None for any other error."""
    import torch.distributed as dist

    if isinstance(exc, UserFacingError):  # said already, in its own words
        return None
    if not isinstance(exc, getattr(dist, "DistError", ())) and not any(mark in str(exc) for mark in _PEER_GONE):
        return None
    rank = os.environ.get("RANK", "?")
    lines = str(exc).strip().splitlines() or [type(exc).__name__]
    said = next((mark for mark in _PEER_GONE[:2] if mark in lines[0]), lines[0][:160])
    return ProcessLost(
        f"process {rank} lost touch with the other processes of this launch ({said}): one of them was killed or "
        f"failed, and its own output says why; {last_checkpoint(checkpoints, 'the last checkpoint')}; continue "
        f"with `{resume}`"
    )


def what_failed(exc: Exception) -> str:
    """One line: the exception's type and first line; for one re-raised from a DataLoader worker, the original
    error, which is the last line of the worker's traceback."""
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    if len(lines) > 1 and lines[1].startswith("Original Traceback"):
        return lines[-1].strip()[:300]
    return f"{type(exc).__name__}: {lines[0][:300]}" if lines else type(exc).__name__


def data_failed(
    checkpoints: Path, step: int, reason: str, commands: NextCommands, reads_cache: bool
) -> TrainingDataFailed:
    """`reads_cache`: the batches are read from a teacher cache, whose damage `recipe cache --verify` finds."""
    cache = (
        "; a teacher cache shard that is missing or damaged is found and rewritten by "
        f"`{commands.command('cache', '--verify')}`"
        if reads_cache
        else ""
    )
    return TrainingDataFailed(
        f"the training data failed at step {step}: {reason}; {last_checkpoint(checkpoints, 'the last checkpoint')}. "
        "A loader worker that was killed points at host memory (lower hardware.num_workers); one that timed out "
        "lost or never made its batch (its traceback is printed above; hardware.num_workers: 0 reads in the main "
        f"process){cache}. Then continue with `{commands.resume}`."
    )


def write_failed(checkpoints: Path, target: Path, exc: OSError, then: str, keep_last: int) -> CheckpointWriteError:
    """Names what failed, what is intact (the write went to a temporary name) and how much room it needs."""
    kept = step_checkpoints(checkpoints)
    if kept:
        intact = f"{kept[-1]} is intact (a checkpoint takes {size_in_words(bytes_under(kept[-1]))})"
    else:
        intact = "no earlier checkpoint exists"
    refused = exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    fewer = f" (or lower output.keep_last, now {keep_last})" if keep_last > 1 else ""
    remedy = "Make it writable again" if refused else f"Free space there{fewer}"
    return CheckpointWriteError(
        f"could not write {target}: {exc.strerror or exc}; {intact} (a checkpoint is never left half-written). "
        f"{remedy}, {then}."
    )


def damaged_checkpoint(checkpoint: Path, exc: Exception, resume: str) -> DamagedCheckpoint:
    """Names the unreadable checkpoint and the one a resume (the command line `resume`) would use once it is moved
    away: the newest of the other step checkpoints and `best`, as run_dir.choose_start picks."""
    best = checkpoint.parent / "best"
    others = []
    for other in [*step_checkpoints(checkpoint.parent), *([best] if (best / COMPLETE).is_file() else [])]:
        with contextlib.suppress(OSError, ValueError, TypeError):
            if other != checkpoint:
                others.append((read_position(other).global_step, other))
    offered = None
    for step, other in sorted(others, key=lambda found: found[0], reverse=True):  # the newest that reads back whole
        with contextlib.suppress(OSError, ValueError, TypeError):
            read_state(other)
            verify_checksums(other)  # hashes this one only: the first whole one ends the search
            offered = f"best (step {step})" if other == best else other.name
            break
    if offered is not None:
        then = f"`{resume}` then continues from {offered}"
    else:
        then = "no earlier checkpoint exists, so the run would start again from step 0"
    return DamagedCheckpoint(
        f"cannot resume from {checkpoint}: {what_failed(exc)}. It is damaged or was written by another "
        f"recipe; move it out of {checkpoint.parent} (keep it if you want to inspect it) and {then}"
    )

"""One run per output directory: a lock against a second process, and no fresh start over an earlier run's files.

Two `recipe run`s into one directory interleave their checkpoints, prune each other's and mix their metrics; a
fresh run into a directory that holds a `best` checkpoint, an export or metrics of an earlier run replaces them.
Both are refused here, with what to do instead.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from pathlib import Path

from components.atomic_files import ForeignDirectoryError, check_replaceable, recover_directory, remove_stale_copies
from components.disk_space import bytes_under, size_in_words
from components.errors import some_of
from recipe_runner.processes import first_process
from recipe_runner.trainer.checkpoint import (
    COMPLETE,
    STEP_DIR,
    added_to_checkpoint,
    read_position,
    read_record,
    step_checkpoints,
)
from recipe_runner.trainer.parts import RunSetupError

LOCK_NAME = ".recipe-run.lock"
# What an earlier run leaves besides step checkpoints; a fresh run would replace each of them.
_EARLIER_RUN = ("checkpoints/best", "export", "metrics.jsonl")


class DirectoryLock:
    """An advisory lock (flock) on a file in a directory that one verb writes (`recipe run`: output.dir,
    `recipe cache`: the cache), held while the verb lives. The writer holds it exclusively; verbs that only read
    the directory (`recipe run` reading a cache) share it, so no writer replaces files under them. The kernel
    drops it when the process dies, so a killed one never leaves a stale lock behind."""

    def __init__(
        self,
        directory: Path,
        name: str = LOCK_NAME,
        verb: str = "recipe run",
        remedy: str = "choose another output.dir (e.g. --set output.dir=runs/new)",
        reader: str = "another process",
    ) -> None:
        self.path = Path(directory) / name
        self.verb, self.remedy, self.reader = verb, remedy, reader
        self._handle = None

    def acquire(self, shared: bool = False) -> DirectoryLock:
        # Under a launcher (torchrun) every process runs this before the Accelerator exists: the first one (RANK 0,
        # set by the launcher) holds the lock for all of them.
        if not first_process():
            return self
        try:
            import fcntl
        except ImportError:  # no flock on this platform: run unguarded rather than not at all
            return self
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # A reader needs only to read the lock file (flock works on a read-only handle).
            handle = self.path.open("r" if shared and self.path.is_file() else "a+", encoding="utf-8")
        except OSError:
            if not shared:
                raise
            return self  # a directory this reader cannot write (a shared read-only cache): nobody here writes it
        try:
            fcntl.flock(handle, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
        except BlockingIOError:
            message = self._in_use(handle, shared)
            handle.close()
            raise RunSetupError(f"{message}: wait for it to end, or {self.remedy}") from None
        if not shared:  # readers leave the writer's record alone: there are many of them
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()}")
            handle.flush()
        self._handle = handle
        return self

    def _in_use(self, handle, shared: bool) -> str:
        """Who holds the lock: a shared request is only refused by the writer; an exclusive one by either."""
        import fcntl

        handle.seek(0)
        holder = handle.read().strip() or "another process"
        if shared:
            return f"{self.path.parent} is being written by `{self.verb}` ({holder})"
        try:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)  # granted only when every holder is a reader
        except BlockingIOError:
            return f"{self.path.parent} is in use by another `{self.verb}` ({holder})"
        return f"{self.path.parent} is being read by {self.reader}"

    def release(self) -> None:
        if self._handle is not None:
            self._handle.close()  # closing drops the flock
            self._handle = None


def saved_step(checkpoint: Path) -> int | None:
    """Its global step, or None when it cannot be read (a resume from it says why)."""
    try:
        return read_position(checkpoint).global_step
    except (OSError, ValueError, TypeError):
        return None


def _check_best_replaceable(best: Path, resume_line: str) -> None:
    try:
        check_replaceable(best, COMPLETE, "checkpoint", "", added_to_checkpoint)
    except ForeignDirectoryError:
        theirs = added_to_checkpoint(best) if (best / COMPLETE).is_file() else []
        held = f"holds {some_of(theirs, 4)}, which no run wrote" if theirs else "is not a checkpoint (no run wrote it)"
        move = "move those files out of it" if theirs else "move it away"
        raise ForeignDirectoryError(
            f"{best} {held}; the first better evaluation replaces it, which would lose them: {move}, then rerun "
            f"`{resume_line}`"
        ) from None


def choose_start(out_dir: Path, resume: bool, main: bool, recipe_name: str, resume_line: str) -> Path | None:
    """The checkpoint a run continues from (None: step 0), after the main process tidied what a killed run left;
    `resume_line` is the command a refusal offers.

    With --resume that is the newest of the step checkpoints and `best`: a run killed after an evaluation but
    before its next step checkpoint has its progress in `best` alone. Refuses a fresh start over an earlier run,
    and a step folder that the run would have to write again but may not replace."""
    checkpoints = out_dir / "checkpoints"
    if main:
        tidy_checkpoints(checkpoints)
        # A run killed while exporting, resumed within a minute, would otherwise leave its copy for good (the
        # finished run exports no more); every writer of this export holds the run lock, held here.
        remove_stale_copies(out_dir / "export", min_age=0)
    existing = step_checkpoints(checkpoints) if resume else []
    start = existing[-1] if existing else None
    best = checkpoints / "best"
    if resume and (best / COMPLETE).is_file():
        # A newest step whose position cannot be read stays the start: resuming names its damage and the whole
        # checkpoint to use, rather than going back silently to an older `best` (whose steps would overwrite it).
        best_step, newest = saved_step(best), saved_step(start) if start is not None else None
        if best_step is not None and (start is None or (newest is not None and best_step > newest)):
            start = best
    if best.exists() or best.is_symlink():  # the first better evaluation replaces it: refused now, not hours in
        _check_best_replaceable(best, resume_line)
    if start is None:
        # Refused before the run says that it starts from step 0.
        refuse_fresh_start(out_dir, recipe_name, resume_line, resuming=resume)
        if resume and not any((out_dir / name).exists() for name in ("checkpoints", "resolved_recipe.yaml")):
            print(
                f"--resume: nothing to resume in {out_dir}, so a new run starts from step 0 (if output.dir is "
                "mistyped, stop it now with Ctrl-C)",
                file=sys.stderr,
            )
        elif resume:
            print(f"--resume: no checkpoint in {checkpoints}; starting from step 0", file=sys.stderr)
    _refuse_incomplete_steps(checkpoints, (saved_step(start) or 0) if start is not None else 0, main)
    return start


def _refuse_incomplete_steps(checkpoints: Path, start_step: int, main: bool) -> None:
    """A step folder without its trainer_state.json (a copy cut short, a file deleted) is no checkpoint: one the
    run will reach again would stop it there, hours in; an older one only holds disk."""
    incomplete = [p for p in (checkpoints.iterdir() if checkpoints.is_dir() else []) if STEP_DIR.match(p.name)]
    incomplete = sorted(p for p in incomplete if not (p / COMPLETE).is_file())
    ahead = [p for p in incomplete if int(STEP_DIR.match(p.name)[1]) > start_step]
    if ahead:
        raise RunSetupError(
            f"{ahead[0]} is not a whole checkpoint (it has no {COMPLETE}: a copy cut short, or a file deleted); the "
            f"run would write it again at step {int(STEP_DIR.match(ahead[0].name)[1])} and never replaces what it "
            f"did not write: move it out of {checkpoints} (or rename it, e.g. {ahead[0].name}.incomplete) and rerun"
        )
    for leftover in incomplete if main else []:
        print(
            f"warning: {leftover} is not a whole checkpoint (no {COMPLETE}) and is never read: delete it to free "
            f"{size_in_words(bytes_under(leftover))}",
            file=sys.stderr,
        )


def refuse_fresh_start(out_dir: Path, recipe_name: str, resume_line: str, resuming: bool = False) -> None:
    """A run without --resume may only start where no earlier run left checkpoints, an export or metrics. With
    --resume but no checkpoint (the earlier run stopped before its first one), its metrics alone are no reason to
    refuse: they describe steps that are trained again. The checkpoints of another recipe (one that this recipe
    extends, and whose output.dir it inherited) are never offered for --resume."""
    existing = step_checkpoints(out_dir / "checkpoints")
    owner = trained_by(existing[-1]) if existing else None
    if existing and owner not in (None, recipe_name):
        raise RunSetupError(
            f"{out_dir} holds the checkpoints of recipe {owner!r} (latest {existing[-1].name}), not of "
            f"{recipe_name!r}: give this recipe an output.dir of its own (e.g. --set output.dir=runs/{recipe_name}); "
            "a recipe that extends another inherits its output.dir"
        )
    if existing:
        raise RunSetupError(
            f"{out_dir} already holds checkpoints (latest {existing[-1].name}); use `{resume_line}` to "
            "continue, or choose another output.dir (e.g. --set output.dir=runs/new)"
        )
    found = [name for name in _EARLIER_RUN if (out_dir / name).exists() and not (resuming and name == "metrics.jsonl")]
    if found:
        best = out_dir / "checkpoints" / "best"
        step = saved_step(best) if (best / COMPLETE).is_file() else None
        if step is not None:
            go_on = f"; or continue it from there (step {step}) with `{resume_line}`"
        elif found == ["metrics.jsonl"]:  # a run that stopped before its first checkpoint
            go_on = f"; or `{resume_line}`, which trains it again from step 0 and writes its log afresh"
        else:
            go_on = ""
        raise RunSetupError(
            f"{out_dir} holds an earlier run's {', '.join(found)}, which a new run would replace: choose another "
            f"output.dir (e.g. --set output.dir=runs/new), or move them away first{go_on}"
        )


def trained_by(checkpoint: Path) -> str | None:
    """The `recipe:` name in the checkpoint's run record; None when it has none or cannot be read."""
    try:
        record = read_record(checkpoint)
    except (OSError, ValueError):
        return None
    name = record["recipe"].get("recipe") if record else None
    return name if isinstance(name, str) else None


# What a checkpoint write (mkdtemp's 8 characters) or a prune leaves when killed; a person's own
# `.step-00000060-backup.tmp` is no such name and stays.
_OUR_TEMPORARY = re.compile(r"^\.(step-\d{8}|best)\.([a-z0-9_]{8}|pruned)\.tmp$")


def tidy_checkpoints(checkpoints: Path) -> list[Path]:
    """After a killed run: put back a `best` hidden by a crash mid-swap, and delete half-written checkpoint
    directories (`.step-*.tmp`, `.best.*.tmp`), only ever partial copies, never read, and as large as a
    checkpoint each, and half-written checksum files. Returns the directories deleted. Call with the run lock
    held."""
    if not checkpoints.is_dir():
        return []
    recover_directory(checkpoints / "best", COMPLETE)
    stale = [p for p in checkpoints.iterdir() if p.is_dir() and not p.is_symlink() and _OUR_TEMPORARY.match(p.name)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
        print(f"removed {path}: a partial checkpoint copy left by a run that was stopped", file=sys.stderr)
    for lock in checkpoints.glob(".*.tmp.lock"):  # the lock files their writers held beside them
        lock.unlink(missing_ok=True)
    for sums in checkpoints.glob("*/.checksums.json.*.tmp"):  # checksums an exit cut short (checksums.py)
        sums.unlink(missing_ok=True)
    return stale

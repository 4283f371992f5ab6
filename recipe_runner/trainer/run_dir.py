"""One run per output directory: a lock against a second process, and no fresh start over an earlier run's files.

Two `recipe run`s into one directory interleave their checkpoints, prune each other's and mix their metrics; a
fresh run into a directory that holds a `best` checkpoint, an export or metrics of an earlier run replaces them.
Both are refused here, with what to do instead.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from components.atomic_files import recover_directory
from recipe_runner.trainer.checkpoint import COMPLETE, step_checkpoints
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
        if os.environ.get("RANK", "0") != "0":
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


def refuse_fresh_start(out_dir: Path, resuming: bool = False) -> None:
    """A run without --resume may only start where no earlier run left checkpoints, an export or metrics. With
    --resume but no checkpoint (the earlier run stopped before its first one), its metrics alone are no reason to
    refuse: they describe steps that are trained again."""
    existing = step_checkpoints(out_dir / "checkpoints")
    if existing:
        raise RunSetupError(
            f"{out_dir} already holds checkpoints (latest {existing[-1].name}); use `recipe run --resume` to "
            "continue, or choose another output.dir (e.g. --set output.dir=runs/new)"
        )
    found = [name for name in _EARLIER_RUN if (out_dir / name).exists() and not (resuming and name == "metrics.jsonl")]
    if found:
        raise RunSetupError(
            f"{out_dir} holds an earlier run's {', '.join(found)}, which a new run would replace: choose another "
            "output.dir (e.g. --set output.dir=runs/new), or move them away first"
        )


def tidy_checkpoints(checkpoints: Path) -> list[Path]:
    """After a killed run: put back a `best` hidden by a crash mid-swap, and delete half-written checkpoint
    directories (`.step-*.tmp`, `.best.*.tmp`), only ever partial copies, never read, and as large as a
    checkpoint each, and half-written checksum files. Returns the directories deleted. Call with the run lock
    held."""
    if not checkpoints.is_dir():
        return []
    recover_directory(checkpoints / "best", COMPLETE)
    stale = [p for p in checkpoints.iterdir() if p.is_dir() and p.name.startswith(".") and p.name.endswith(".tmp")]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)
    for lock in checkpoints.glob(".*.tmp.lock"):  # the lock files their writers held beside them
        lock.unlink(missing_ok=True)
    for sums in checkpoints.glob("*/.checksums.json.*.tmp"):  # checksums an exit cut short (checksums.py)
        sums.unlink(missing_ok=True)
    return stale

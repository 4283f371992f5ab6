"""Write-then-rename helpers: a file or directory appears under its final name only when complete.

What they write gets the permissions a plain `open`/`mkdir` would (under the umask), not the private 0600/0700
of mkstemp, mkdtemp or safetensors (which saves through its own temporary), so colleagues on a shared machine
can read exports, checkpoints and caches as they could any other file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from components.errors import UserFacingError, some_of


class ForeignDirectoryError(UserFacingError):
    """A directory write would replace something that is not an earlier output of the same kind."""


def current_umask() -> int:
    """The process umask; reading it means setting it, so it is put back at once."""
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _as_if_plainly_made(root: Path) -> None:
    """Modes as a plain open/mkdir under the umask would give, on `root` and (a directory) all it holds."""
    mask = current_umask()
    for path in [root, *(root.rglob("*") if root.is_dir() else [])]:
        if not path.is_symlink():
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


_OS_ERROR_CODE = re.compile(r"\(os error (\d+)\)")


@contextmanager
def _failed_writes_as_os_errors() -> Iterator[None]:
    """safetensors reports a failed write (a full disk, a read-only file system) as its own SafetensorError;
    it becomes the OSError it is, so a caller's one handler for failed writes covers every file it writes."""
    from safetensors import SafetensorError

    try:
        yield
    except SafetensorError as exc:
        found = _OS_ERROR_CODE.search(str(exc))
        if found is None:
            raise
        code = int(found.group(1))
        raise OSError(code, os.strerror(code)) from exc


def _old(final: Path) -> Path:
    return final.parent / f".{final.name}.old"


@contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces `final` in one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _failed_writes_as_os_errors():
            yield tmp
        _as_if_plainly_made(tmp)  # after writing: a writer may have replaced `tmp` by a file of its own
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_json_atomic(final: Path, data: Any) -> None:
    with atomic_path(final) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True), encoding="utf-8")


def save_safetensors_atomic(final: Path, tensors: dict, metadata: dict[str, str] | None = None) -> None:
    from safetensors.torch import save_file

    with atomic_path(final) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)


def hidden_by_a_swap(final: Path, marker: str) -> Path | None:
    """The complete earlier version of a missing `final` (`.NAME.old`, with `marker`) that a crash between the two
    renames of a swap left; None when `final` is there or no such copy is."""
    final, old = Path(final), _old(Path(final))
    if final.exists() or final.is_symlink() or not (old / marker).is_file():
        return None
    return old


def recover_directory(final: Path, marker: str) -> bool:
    """Put back the last complete version of `final` after a crash between the two renames of a swap; returns
    whether it was restored. Call it before reading `final`, so a reader never misses what a crash hid.
    """
    old = hidden_by_a_swap(final, marker)
    if old is None:
        return False
    final = Path(final)
    os.replace(old, final)
    _fsync_dir(final.parent)
    return True


def check_replaceable(
    final: Path,
    marker: str,
    kind: str = "output directory",
    remedy: str = "choose another output.dir",
    added: Callable[[Path], list[str]] | None = None,
) -> None:
    """Refuse a target that holds anything but an earlier `kind` (one with `marker`): it may be a user's own files.

    A missing or empty directory is fine. `remedy` says where to choose another place (e.g. "--out"). With
    `added` (what in an earlier `kind` it did not write itself), an earlier `kind` to which someone added files
    of their own is refused too, naming them.
    """
    final = Path(final)
    recover_directory(final, marker)
    if not (final.exists() or final.is_symlink()):
        return
    if final.is_dir() and (final / marker).is_file() and added is not None:
        theirs = added(final)
        if theirs:
            shown = some_of(theirs, 8)
            raise ForeignDirectoryError(
                f"{final} is a previous {kind}, but also holds {shown} (not written by recipe), which replacing "
                f"it would delete: move them out of {final}, or {remedy}"
            )
    if final.is_dir() and ((final / marker).is_file() or not any(final.iterdir())):
        return
    what = "a directory" if final.is_dir() else "a file"
    raise ForeignDirectoryError(
        f"{final} is {what} but not a previous {kind} (it has no {marker}); nothing was written, so as not to "
        f"replace what is there: {remedy}, or move it away"
    )


STALE_SECONDS = 60  # a temporary directory this old whose writer holds no lock on it was left by a killed one
_RANDOM_PART = re.compile(r"^[a-z0-9_]{8}$")  # what mkdtemp puts between our prefix and suffix


def _lock_file(tmp: Path) -> Path:
    """Beside the temporary directory, not in it: an export lists every file it holds."""
    return tmp.with_name(tmp.name + ".lock")


def _hold(tmp: Path) -> int | None:
    """An flock on `tmp`'s lock file for as long as `tmp` is being built, so a later writer can tell it is live
    (the kernel drops it when the process dies, SIGKILL included). Where no lock can be taken (no flock, or a
    file system that refuses it) there is no lock file either, so the copy is never taken for a dead one."""
    try:
        import fcntl
    except ImportError:
        return None
    path = _lock_file(tmp)
    try:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(handle)
        path.unlink(missing_ok=True)
        return None
    return handle


def _release(tmp: Path, handle: int | None) -> None:
    if handle is not None:
        _lock_file(tmp).unlink(missing_ok=True)
        os.close(handle)


def _dead_writers_copy(candidate: Path, prefix: str, min_age: float = STALE_SECONDS) -> bool:
    """A temporary directory of ours (mkdtemp's name, our lock file beside it) whose writer is gone: the lock
    file is old and nobody holds it. Anything else, a user's own `.export.backup.tmp` included, is not."""
    name = candidate.name
    if not (name.startswith(prefix) and name.endswith(".tmp")) or not _RANDOM_PART.match(name[len(prefix) : -4]):
        return False
    lock = _lock_file(candidate)
    if candidate.is_symlink() or not candidate.is_dir() or lock.is_symlink() or not lock.is_file():
        return False
    if time.time() - lock.stat().st_mtime < min_age:  # just made: its writer may not hold it yet
        return False
    import fcntl

    try:
        handle = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # held by a live writer, or no way to tell
        return False
    finally:
        os.close(handle)
    return True


def remove_stale_copies(final: Path, min_age: float = STALE_SECONDS) -> list[Path]:
    """Delete the temporary copies of `final` that a killed writer left (SIGKILL, power loss): as large as the
    output each, and never read. Says what it deleted on stderr. `min_age` 0: no writer of `final` can be
    starting now (the caller holds the lock every writer of it takes), so a young copy is a dead one too."""
    try:
        import fcntl  # noqa: F401
    except ImportError:
        return []
    prefix = f".{final.name}."
    found = final.parent.iterdir() if final.parent.is_dir() else ()
    stale = [p for p in found if _dead_writers_copy(p, prefix, min_age)]
    for candidate in stale:
        shutil.rmtree(candidate, ignore_errors=True)
        _lock_file(candidate).unlink(missing_ok=True)
        print(f"removed {candidate}: a partial copy of {final.name} left by a writer that was killed", file=sys.stderr)
    return stale


@contextmanager
def atomic_directory(
    final: Path,
    marker: str,
    kind: str = "output directory",
    remedy: str = "choose another output.dir",
    added: Callable[[Path], list[str]] | None = None,
) -> Iterator[Path]:
    """Build a directory under a temporary name; swap it in only once complete (the old one survives a crash).

    Only an earlier directory of the same kind (it holds `marker`, which the caller writes last) or an empty one
    is ever replaced; anything else raises ForeignDirectoryError before a byte is written.
    """
    final = Path(final)
    check_replaceable(final, marker, kind, remedy, added)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_copies(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    held = None
    old = _old(final)
    try:
        held = _hold(tmp)
        with _failed_writes_as_os_errors():
            yield tmp
        _as_if_plainly_made(tmp)
        _fsync_dir(tmp)
        check_replaceable(final, marker, kind, remedy, added)  # again: the target may have changed meanwhile
        if final.exists() or final.is_symlink():
            if old.exists() or old.is_symlink():
                _remove(old)
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        if old.exists() or old.is_symlink():
            _remove(old)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        _release(tmp, held)

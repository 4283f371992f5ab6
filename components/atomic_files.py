"""Write-then-rename helpers: a file or directory appears under its final name only when complete.

What they write gets the permissions a plain `open`/`mkdir` would (under the umask), not the private 0600/0700
of mkstemp, mkdtemp or safetensors (which saves through its own temporary), so colleagues on a shared machine
can read exports, checkpoints and caches as they could any other file.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from components.errors import UserFacingError


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


def recover_directory(final: Path, marker: str) -> bool:
    """Put back the last complete version of `final` after a crash between the two renames of a swap.

    Then `final` is missing and `.NAME.old` holds the complete earlier version (it has `marker`); returns
    whether it was restored. Call it before reading `final`, so a reader never misses what a crash hid.
    """
    final, old = Path(final), _old(Path(final))
    if final.exists() or final.is_symlink() or not (old / marker).is_file():
        return False
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
            shown = ", ".join(theirs[:8]) + (f" and {len(theirs) - 8} more" if len(theirs) > 8 else "")
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


def _hold(directory: Path) -> int | None:
    """An flock on `directory` itself for as long as it is being built, so a later writer can tell it is live.
    The kernel drops it when the process dies, SIGKILL included. None where there is no flock."""
    try:
        import fcntl
    except ImportError:
        return None
    handle = os.open(directory, os.O_RDONLY)
    fcntl.flock(handle, fcntl.LOCK_EX)
    return handle


def remove_stale_copies(final: Path) -> list[Path]:
    """Delete the temporary directories of `final` that a killed writer left (SIGKILL, power loss): as large as
    the output each, and never read. A live writer holds a lock on its own, and one just made is left alone."""
    prefix = f".{final.name}."
    try:
        import fcntl
    except ImportError:
        return []
    removed = []
    for candidate in final.parent.iterdir() if final.parent.is_dir() else ():
        name = candidate.name
        if not (name.startswith(prefix) and name.endswith(".tmp")) or "." in name[len(prefix) : -len(".tmp")]:
            continue  # not a temporary copy of `final` (another output's has a dot more: `.export.v2.x.tmp`)
        if candidate.is_symlink() or not candidate.is_dir():
            continue
        if time.time() - candidate.stat().st_mtime < STALE_SECONDS:
            continue
        handle = os.open(candidate, os.O_RDONLY)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # its writer is alive
        finally:
            os.close(handle)
        shutil.rmtree(candidate, ignore_errors=True)
        removed.append(candidate)
    return removed


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
    held = _hold(tmp)
    old = _old(final)
    try:
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
        if held is not None:
            os.close(held)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

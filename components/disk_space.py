"""Free space, checked before hours of work that would otherwise stop at the first file the disk cannot hold."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from components.errors import UserFacingError


class NotEnoughDiskSpace(UserFacingError, OSError):
    """What a command is about to write does not fit on the disk it writes to."""


class NotWritable(UserFacingError, OSError):
    """Where a command is about to write refuses writes (a read-only mount, no permission)."""


def size_in_words(count: int) -> str:
    """Bytes at a scale a person reads: 12.1 GiB, 340.2 MiB, 18.0 KiB."""
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if count >= 1 << shift:
            return f"{count / (1 << shift):.1f} {unit}"
    return f"{count} bytes"


def _nearest_existing(path: str | Path) -> Path:
    """`path`, or the folder it will be made in: symlinks followed, so a link to another disk counts as that disk."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: str | Path) -> int:
    """Free bytes on the filesystem that `path` is on, or will be on once created (its nearest existing folder)."""
    return shutil.disk_usage(_nearest_existing(path)).free


def same_disk(first: str | Path, second: str | Path) -> bool:
    """Whether two places (made yet or not) write to one filesystem, so their sizes add up against one free."""
    return os.stat(_nearest_existing(first)).st_dev == os.stat(_nearest_existing(second)).st_dev


def require_writable(path: str | Path, what: str, remedies: str) -> None:
    """Refuse before any work when nothing can be written where `path` is (or will be made): found at the first
    checkpoint otherwise, hours in. Creates nothing that stays."""
    place = _nearest_existing(path)
    try:
        with tempfile.TemporaryFile(dir=place):
            pass
    except OSError as exc:
        raise NotWritable(f"cannot write into {place}: {exc.strerror or exc}; {what} go there; {remedies}") from None


def bytes_under(path: str | Path) -> int:
    """Bytes of the files below `path`; 0 when it does not exist."""
    root = Path(path)
    if not root.is_dir():
        return 0
    return sum(entry.stat().st_size for entry in root.rglob("*") if entry.is_file() and not entry.is_symlink())


def _both_in_words(first: int, second: int) -> tuple[str, str]:
    """Two sizes that differ, so written that they read differently (exact bytes when rounding would hide it)."""
    words = size_in_words(first), size_in_words(second)
    return words if words[0] != words[1] else (f"{first:,} bytes", f"{second:,} bytes")


def require_free(path: str | Path, needed: int, what: str, remedies: str) -> None:
    """Refuse before any work when `needed` more bytes will not fit where `path` is; `what` says what they are."""
    if needed <= 0:
        return
    free = free_bytes(path)
    if needed > free:
        need_words, free_words = _both_in_words(needed, free)
        are = "are" if free_words.endswith("bytes") else "is"
        raise NotEnoughDiskSpace(
            f"not enough disk space for {path}: {what}; that needs {need_words} more than is there now, and "
            f"{free_words} {are} free; {remedies}"
        )

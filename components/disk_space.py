"""Free space, checked before hours of work that would otherwise stop at the first file the disk cannot hold."""

from __future__ import annotations

import shutil
from pathlib import Path

from components.errors import UserFacingError


class NotEnoughDiskSpace(UserFacingError, OSError):
    """What a command is about to write does not fit on the disk it writes to."""


def size_in_words(count: int) -> str:
    """Bytes at a scale a person reads: 12.1 GiB, 340.2 MiB, 18.0 KiB."""
    for shift, unit in ((30, "GiB"), (20, "MiB"), (10, "KiB")):
        if count >= 1 << shift:
            return f"{count / (1 << shift):.1f} {unit}"
    return f"{count} bytes"


def free_bytes(path: str | Path) -> int:
    """Free bytes on the filesystem that `path` is on, or will be on once created (its nearest existing folder)."""
    path = Path(path).resolve()
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


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

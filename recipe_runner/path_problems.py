"""Paths the file system refuses to look at (a name too long, a symlink loop) become a recipe problem.

`Path.exists()` and `Path.resolve()` raise on these instead of answering, so every later check that asks
about the path would crash; the recipe loader asks here once and stops at the field that wrote the path.
"""

from __future__ import annotations

import errno
from pathlib import Path


def _reason(exc: BaseException) -> str:
    code = getattr(exc, "errno", None)
    if code == errno.ENAMETOOLONG:
        return "a name in it is longer than the file system allows (255 bytes per name): shorten it"
    if code == errno.ELOOP or (isinstance(exc, RuntimeError) and "loop" in str(exc).lower()):
        return "it runs through a symlink loop: fix or remove the link"
    if isinstance(exc, ValueError):  # a NUL byte, which no file name may hold
        return f"not a usable path ({exc})"
    return f"cannot be looked at: {getattr(exc, 'strerror', None) or exc}"


def resolve_or_reason(path: Path, base: Path) -> tuple[Path | None, str | None]:
    """The absolute form of `path` (relative to `base`, `~` expanded), or why the file system cannot answer."""
    try:
        resolved = (base / path.expanduser()).resolve()
        resolved.exists()  # raises, rather than answering False, for a name too long
    except (RuntimeError, ValueError, OSError) as exc:
        return None, _reason(exc)
    return resolved, None

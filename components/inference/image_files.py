"""Where rendered images go: checked before any model loads, numbered for several prompts, never over an old render.

An explicit path is the user's choice and may be overwritten; a default path never is: the first free
`name.png`, `name-1.png`, ... is taken, with all of one render's numbered files sharing that name.
"""

from __future__ import annotations

import errno
import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from components.atomic_files import atomic_path
from components.inference.chroma import InferenceError

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}


def check_image_path(out: Path, option: str = "--out") -> None:
    """A known extension and a directory that can be made and written, so no render is lost at the end."""
    if out.suffix.lower() not in FORMATS:
        raise InferenceError(f"{option} {out}: the file name must end in {', '.join(FORMATS)} (the image format)")
    if out.is_dir():
        raise InferenceError(f"{option} {out}: is a directory; give a file name such as {out / 'image.png'}")
    # The nearest existing directory is where the missing ones would be made: it must take a new entry.
    nearest = next(p for p in (out.parent.absolute(), *out.parent.absolute().parents) if p.exists())
    if not nearest.is_dir():
        raise InferenceError(f"{option} {out}: {nearest} is a file, not a directory; give another path")
    try:
        with tempfile.TemporaryFile(dir=nearest, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise InferenceError(
            f"{option} {out}: cannot write to {nearest} ({exc.strerror or exc}); give a path in a writable directory"
        ) from None


def check_replaceable(out: Path, option: str = "--out") -> None:
    """--out replaces an earlier image, never a file of another kind that happens to bear an image's name."""
    if not out.exists() and not out.is_symlink():
        return
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(out) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InferenceError(
            f"{option} {out}: exists and is not an image, so it is not replaced; move it away or give another path"
        ) from None


def numbered(out: Path, index: int, count: int) -> Path:
    """`out` itself for one prompt; `stem_01.png`, `stem_02.png`, ... for several."""
    if count == 1:
        return out
    return out.with_name(f"{out.stem}_{index + 1:0{max(2, len(str(count)))}d}{out.suffix}")


def _variants(out: Path) -> Iterator[Path]:
    yield out
    for n in itertools.count(1):
        yield out.with_name(f"{out.stem}-{n}{out.suffix}")


def free_name(out: Path, count: int) -> Path:
    """The first of `out`, `out-1`, `out-2`, ... none of whose `count` numbered files exists yet."""
    return next(c for c in _variants(out) if not any(numbered(c, i, count).exists() for i in range(count)))


def save_image(image, path: Path, overwrite: bool) -> Path:
    """Write `image` at `path` and return where it went; whatever stops the write, no cut-off image is left under
    a final name (it is written beside it under a temporary one first).

    With `overwrite`, the file is replaced in one rename; without, a file that appeared there since the name
    was chosen (another render) is kept and the next free name is taken.
    """
    image_format = FORMATS[path.suffix.lower()]
    if overwrite:
        with atomic_path(path) as tmp:
            image.save(tmp, format=image_format)
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as handle:
            image.save(handle, format=image_format)
            handle.flush()
            os.fsync(handle.fileno())
        for candidate in _variants(path):
            try:
                _claim(tmp, candidate)
            except FileExistsError:  # a render beside this one took it
                continue
            return candidate
    finally:
        tmp.unlink(missing_ok=True)
    raise AssertionError("unreachable: the names never run out")


def _claim(written: Path, name: Path) -> None:
    """`written` under `name` if nothing is there yet (FileExistsError otherwise), in one step where the file
    system links files."""
    try:
        os.link(written, name)
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EMLINK, errno.EXDEV):
            raise
        with open(name, "xb"):  # no hard links here: claim the name, then move the whole image onto it
            pass
        os.replace(written, name)

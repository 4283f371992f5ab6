"""SHA-256 sums of a checkpoint's files, checked before a resume or an export reads them.

safetensors notices a truncated file, but not bytes changed inside one (a failing disk, a copy between machines
cut short and patched up): such a checkpoint loads, and training would go on from damaged weights. Hashing the
11 GiB of a full-size checkpoint takes seconds, so it runs in a thread beside training once the checkpoint is
complete (hashlib releases the GIL while it hashes). A checkpoint whose hashing an exit cut short has no sums
and loads unchecked, as checkpoints written before sums existed do.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from components.atomic_files import write_json_atomic

SUMS = "checksums.json"
_CHUNK = 16 << 20


class ChecksumMismatch(ValueError):
    """A checkpoint file is not the one its sums were taken of."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def write_checksums(directory: Path) -> None:
    """Sums of every file of a complete checkpoint (temporary dot-files left out)."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.name != SUMS and not p.name.startswith("."))
    sums = {p.name: {"bytes": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    write_json_atomic(directory / SUMS, sums)


def verify_checksums(directory: Path) -> bool:
    """True when every file matches its sum, False when the checkpoint has none; raises ChecksumMismatch naming
    the first file that differs or is missing."""
    path = directory / SUMS
    if not path.is_file():
        return False
    try:
        sums = json.loads(path.read_text())
        expected = {name: (int(entry["bytes"]), str(entry["sha256"])) for name, entry in sums.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ChecksumMismatch(f"{path} is unreadable ({exc})") from None
    for name, (size, sha) in expected.items():
        file = directory / name
        if not file.is_file():
            raise ChecksumMismatch(f"{file} is missing")
        if file.stat().st_size != size:
            raise ChecksumMismatch(f"{file} holds {file.stat().st_size} bytes, not the {size} it was written with")
        if _sha256(file) != sha:
            raise ChecksumMismatch(f"{file} is not the file it was written as (its SHA-256 differs)")
    return True


def unchecked_note(directory: Path) -> str:
    """What to tell when `directory` has no sums: it is read as it is, and any damage inside goes unseen."""
    return (
        f"note: {directory} has no {SUMS} (its hashing was cut short, or it predates sums): read unchecked, so "
        "bytes changed inside a file would go unseen"
    )


class BackgroundChecksums:
    """One hashing thread at a time: a new checkpoint, a pruning or the end of a run waits for the one before, so
    no directory is replaced or deleted while its sums are being taken."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._failed: list[str] = []

    def start(self, directory: Path) -> None:
        self.wait()
        self._thread = threading.Thread(target=self._hash, args=(directory,), name="checkpoint-sums", daemon=True)
        self._thread.start()

    def _hash(self, directory: Path) -> None:
        try:
            write_checksums(directory)
        except OSError as exc:  # sums are a check, not the checkpoint: one without them loads unchecked
            self._failed.append(f"{directory}: {exc.strerror or exc}")

    def wait(self) -> list[str]:
        """Returns the checkpoints whose sums could not be written since the last call (each with why)."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        failed, self._failed = self._failed, []
        return failed

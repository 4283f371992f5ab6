"""A cheap fingerprint of a teacher's weight files, so new weights at the same path are not paired with old outputs.

Names, sizes and 64 slices of each file's bytes spread over its length: hashing gigabytes of weights on every
validate would take minutes, and file times change with every copy that does not keep them (a teacher copied to a
node's scratch disk is the same teacher). New weights change every slice (a LoRA merged into a few matrices of each
layer still changes a share of them). A hub snapshot is named by its commit instead, which the hub fixes.

Fingerprints of another kind (a manifest written when they were taken from file times) prove nothing either way.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from schemas.models import ModelSource

WEIGHT_SUFFIXES = (".safetensors", ".bin")
CONFIG = "config.json"


def model_dir(source: ModelSource) -> Path | None:
    """The directory the weights load from: the local path, or a hub id's snapshot in the local HF cache."""
    from components.models.source import ModelSourceError, locate

    if source.model is None:
        return None
    try:
        location = locate(source.model)
    except ModelSourceError:
        return None
    if location.kind == "local":
        return Path(location.ref)
    from huggingface_hub import try_to_load_from_cache

    cached = try_to_load_from_cache(location.ref, CONFIG, revision=source.revision)
    return Path(cached).parent if isinstance(cached, str) else None


_COMMIT = re.compile(r"^[0-9a-f]{40}$")
SLICES = 64
SLICE_BYTES = 64 * 1024
_KINDS = ("commit:", "content:")


def _file_digest(path: Path) -> str:
    """Name, size and the bytes at SLICES evenly spaced offsets (all of a file up to SLICES slices long)."""
    size = path.stat().st_size
    digest = hashlib.sha256(f"{path.name}\t{size}\n".encode())
    with path.open("rb") as handle:
        if size <= SLICES * SLICE_BYTES:
            digest.update(handle.read())
        else:
            for index in range(SLICES):
                handle.seek(index * (size - SLICE_BYTES) // (SLICES - 1))
                digest.update(handle.read(SLICE_BYTES))
    return digest.hexdigest()


def fingerprint_kind(fingerprint: str) -> str:
    """`commit:`, `content:`, or `times` (the unprefixed kind of manifests written before contents were read)."""
    return next((kind for kind in _KINDS if fingerprint.startswith(kind)), "times")


def comparable(found: str | None, now: str | None) -> bool:
    """Whether two fingerprints can tell the same weights from others: both taken, and taken the same way."""
    return found is not None and now is not None and fingerprint_kind(found) == fingerprint_kind(now)


def weights_fingerprint(source: ModelSource) -> str | None:
    """Digest of the weight files and config.json (see the module); None for an inline config (its identity is
    the config and seed) or when the files cannot be found or read (unknown, not different)."""
    directory = model_dir(source)
    if directory is None or not directory.is_dir():
        return None
    if directory.parent.name == "snapshots" and _COMMIT.match(directory.name):
        return f"commit:{directory.name}"
    try:
        files = sorted(p for p in directory.iterdir() if p.name == CONFIG or p.name.endswith(WEIGHT_SUFFIXES))
        listing = [_file_digest(p) for p in files]
    except OSError:
        return None
    return "content:" + hashlib.sha256("\n".join(listing).encode("utf-8")).hexdigest()[:16]

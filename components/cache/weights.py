"""A cheap fingerprint of a teacher's weight files, so new weights at the same path are not paired with old outputs.

Names, sizes and modification times only: hashing gigabytes of weights on every validate would take minutes. A hub
snapshot is named by its commit instead, which the hub fixes: the same commit downloaded on another machine (other
times) is the same teacher.
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


def weights_fingerprint(source: ModelSource) -> str | None:
    """Digest of (name, size, mtime) of the weight files and config.json; None for an inline config (its
    identity is the config and seed) or when the files cannot be found or read (unknown, not different)."""
    directory = model_dir(source)
    if directory is None or not directory.is_dir():
        return None
    if directory.parent.name == "snapshots" and _COMMIT.match(directory.name):
        return f"commit:{directory.name}"
    try:
        files = sorted(p for p in directory.iterdir() if p.name == CONFIG or p.name.endswith(WEIGHT_SUFFIXES))
        # Whole seconds: a copy that keeps times (cp -p, rsync -t) may lose sub-second precision.
        listing = [f"{p.name}\t{p.stat().st_size}\t{int(p.stat().st_mtime)}" for p in files]
    except OSError:
        return None
    return hashlib.sha256("\n".join(listing).encode("utf-8")).hexdigest()[:16]

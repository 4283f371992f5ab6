"""Shard files: their names, how many prompts each holds, and a cheap check that one is whole."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from components.data.prompts import KEY_LENGTH
from components.safetensors_header import DamagedFileError, read_header


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def shard_count(count: int, shard_size: int) -> int:
    return (count + shard_size - 1) // shard_size


def shard_rows(index: int, count: int, shard_size: int) -> tuple[int, int]:
    """The prompts lo..hi-1 that shard `index` holds."""
    return index * shard_size, min(count, (index + 1) * shard_size)


SPLIT_KEY = "split"  # in a shard's metadata: the digest of the manifest it was written under


def split_digest(manifest: dict[str, Any]) -> str:
    """What ties a shard to its split's manifest (teacher, prompts, count, layout): a shard copied in from another
    cache has a whole header and its own matching sums, so only this tells it apart."""
    made = {key: manifest.get(key) for key in ("identity", "prompts_sha256", "count", "shard_size")}
    return hashlib.sha256(json.dumps(made, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def _offsets(path: Path) -> torch.Tensor:
    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor("offsets")


def shard_damage(path: Path, lo: int, hi: int, split: str | None = None) -> str | None:
    """Why `path` cannot be the shard of prompts lo..hi-1 of the split whose manifest has digest `split`, in words;
    None when it looks whole (a shard written before shards named their split is taken as it stands).

    Reads the header and the small offsets tensor only: a truncated or overwritten file, or one of another
    shard layout, is caught in milliseconds, while values garbled inside the data section are not.
    """
    try:
        header = read_header(path)
    except DamagedFileError as exc:
        return str(exc)
    hidden, offsets = header.get("hidden"), header.get("offsets")
    if hidden is None or offsets is None:
        return "it lacks the `hidden` or `offsets` tensor"
    if offsets["shape"] != [hi - lo + 1] or len(hidden["shape"]) != 2:
        held = offsets["shape"][0] - 1 if len(offsets["shape"]) == 1 else "?"
        return f"it holds {held} prompts where the manifest expects {hi - lo}"
    metadata = header.get("__metadata__") or {}
    first, made = metadata.get("first"), metadata.get(SPLIT_KEY)
    if first is not None and first != str(lo):
        return f"it starts at prompt {first}, not {lo}"
    if None not in (split, made) and made != split:
        return "it was written for another cache (other prompts or another teacher than this split's manifest)"
    try:
        values = _offsets(path)
    except (SafetensorError, OSError) as exc:
        return f"its offsets cannot be read: {exc}"
    steps = values[1:] - values[:-1]
    if int(values[0]) != 0 or bool((steps < 0).any()) or int(values[-1]) != hidden["shape"][0]:
        return "its row offsets do not match its hidden states (the file was overwritten)"
    return None


PROMPTS_KEY = "prompts"  # in a shard's metadata: the `prompt_key` of each of its prompts, in order, joined

SUM_KEY = "sha256"  # in a shard's metadata: the SHA-256 of its tensors' bytes, `hidden` then `offsets`


def tensors_sha256(hidden: torch.Tensor, offsets: torch.Tensor) -> str:
    """Taken as the shard is written and again by `recipe cache --verify`: bytes changed inside a shard (a
    failing disk, a copy patched up) pass the header checks and would train on wrong targets unseen."""
    digest = hashlib.sha256()
    for tensor in (hidden, offsets):
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def content_damage(path: Path) -> str | None:
    """Why the values of a shard are not those it was written with; None when they are, or when the shard
    predates sums (nothing to compare with). Reads the whole shard."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            wanted = (handle.metadata() or {}).get(SUM_KEY)
            if wanted is None:
                return None
            found = tensors_sha256(handle.get_tensor("hidden"), handle.get_tensor("offsets"))
    except (SafetensorError, OSError) as exc:
        return f"it cannot be read: {exc}"
    return None if found == wanted else "its values are not those it was written with (its SHA-256 differs)"


_HEADER_ALLOWANCE = 4096  # a shard's safetensors header and metadata, beside its prompt keys


def missing_shard_bytes(
    split_dir: Path,
    token_ids: list[list[int]],
    shard_size: int,
    chroma_mask: bool,
    width: int,
    itemsize: int,
    split: str | None = None,
) -> tuple[int, int]:
    """The shards a `recipe cache` run still has to write (missing or damaged) and the bytes they will take:
    each prompt's kept rows (its tokens, plus Chroma's one visible pad) x width x itemsize, and the offsets."""
    count, shards, total = len(token_ids), 0, 0
    for index in range(shard_count(count, shard_size)):
        lo, hi = shard_rows(index, count, shard_size)
        final = split_dir / shard_name(index)
        if final.exists() and shard_damage(final, lo, hi, split) is None:
            continue
        rows = sum(len(ids) for ids in token_ids[lo:hi]) + int(chroma_mask) * (hi - lo)
        shards += 1
        total += rows * width * itemsize + (8 + KEY_LENGTH) * (hi - lo + 1) + _HEADER_ALLOWANCE
    return shards, total

"""Shard files: their names, how many prompts each holds, and a cheap check that one is whole."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from components.safetensors_header import DamagedFileError, read_header


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


def shard_count(count: int, shard_size: int) -> int:
    return (count + shard_size - 1) // shard_size


def shard_rows(index: int, count: int, shard_size: int) -> tuple[int, int]:
    """The prompts lo..hi-1 that shard `index` holds."""
    return index * shard_size, min(count, (index + 1) * shard_size)


def _offsets(path: Path) -> torch.Tensor:
    with safe_open(str(path), framework="pt") as handle:
        return handle.get_tensor("offsets")


def shard_damage(path: Path, lo: int, hi: int) -> str | None:
    """Why `path` cannot be the shard of prompts lo..hi-1, in words; None when it looks whole.

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
    first = (header.get("__metadata__") or {}).get("first")
    if first is not None and first != str(lo):
        return f"it starts at prompt {first}, not {lo}"
    try:
        values = _offsets(path)
    except (SafetensorError, OSError) as exc:
        return f"its offsets cannot be read: {exc}"
    steps = values[1:] - values[:-1]
    if int(values[0]) != 0 or bool((steps < 0).any()) or int(values[-1]) != hidden["shape"][0]:
        return "its row offsets do not match its hidden states (the file was overwritten)"
    return None


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


_HEADER_ALLOWANCE = 4096  # a shard's safetensors header and metadata


def missing_shard_bytes(
    split_dir: Path, token_ids: list[list[int]], shard_size: int, chroma_mask: bool, width: int, itemsize: int
) -> tuple[int, int]:
    """The shards a `recipe cache` run still has to write (missing or damaged) and the bytes they will take:
    each prompt's kept rows (its tokens, plus Chroma's one visible pad) x width x itemsize, and the offsets."""
    count, shards, total = len(token_ids), 0, 0
    for index in range(shard_count(count, shard_size)):
        lo, hi = shard_rows(index, count, shard_size)
        final = split_dir / shard_name(index)
        if final.exists() and shard_damage(final, lo, hi) is None:
            continue
        rows = sum(len(ids) for ids in token_ids[lo:hi]) + int(chroma_mask) * (hi - lo)
        shards += 1
        total += rows * width * itemsize + 8 * (hi - lo + 1) + _HEADER_ALLOWANCE
    return shards, total

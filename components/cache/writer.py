"""`recipe cache`: encode the prompts once; each shard appears under its final name only when complete."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from components.atomic_files import save_safetensors_atomic, write_json_atomic
from components.cache.manifest import mismatches, read_manifest
from components.cache.shards import (
    PROMPTS_KEY,
    SPLIT_KEY,
    SUM_KEY,
    shard_count,
    shard_damage,
    shard_name,
    shard_rows,
    tensors_sha256,
)
from components.data.batches import token_budget_batches
from components.errors import UserFacingError
from components.teacher_outputs import encode_teacher

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class CacheMismatchError(UserFacingError, RuntimeError):
    """The cache on disk was made from other settings or other prompts."""


def prepare_split(split_dir: Path, identity: dict, prompts_sha: str, count: int, shard_size: int) -> dict:
    """Create or check the manifest; resuming is allowed only when everything matches."""
    expected = {"identity": identity, "prompts_sha256": prompts_sha, "count": count, "shard_size": shard_size}
    manifest = read_manifest(split_dir)
    if manifest is not None:
        differences = mismatches(manifest, identity)
        for key in ("prompts_sha256", "count", "shard_size"):
            if manifest.get(key) != expected[key]:
                differences.append(f"{key} is {manifest.get(key)!r} in the cache but {expected[key]!r} now")
        if differences:
            raise CacheMismatchError(f"cache {split_dir} does not match the recipe: " + "; ".join(differences))
        return manifest
    split_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(split_dir / "manifest.json", expected)
    return expected


def padded_batch(
    token_ids: list[list[int]], batch: list[int], chroma_mask: bool, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded to the batch's longest prompt (plus Chroma's one visible pad) and the real-token mask."""
    width = max(len(token_ids[i]) for i in batch) + (1 if chroma_mask else 0)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    real = torch.zeros((len(batch), width), dtype=torch.bool)
    for row, i in enumerate(batch):
        ids[row, : len(token_ids[i])] = torch.tensor(token_ids[i])
        real[row, : len(token_ids[i])] = True
    return ids, real


def _shard_rows(
    teacher: torch.nn.Module | None,
    token_ids: list[list[int]],
    lo: int,
    hi: int,
    *,
    batch_tokens: int,
    chroma_mask: bool,
    dtype: torch.dtype,
    pad_id: int,
    device: torch.device,
    progress: Callable[[int], None] | None,
    reuse: Reuse | None,
) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Prompts lo..hi-1 through the teacher in length-sorted token-budget batches (those `reuse` has rows for are
    copied instead); returns their kept rows in prompt order in one tensor on `device`, the per-prompt offsets,
    the real-token count encoded and the prompts copied.

    Each batch's kept rows are copied straight to their place in a shard buffer allocated once (two indexed
    copies per batch, index arrays built on the host, no device sync), so a GPU does the gathering, the host
    copies nothing, and device memory holds the shard once rather than its batches plus a concatenation.
    """
    kept = np.array([len(ids) + int(chroma_mask) for ids in token_ids[lo:hi]], dtype=np.int64)
    offsets = np.zeros(hi - lo + 1, dtype=np.int64)
    np.cumsum(kept, out=offsets[1:])
    taken = _taken_rows(reuse, lo, hi, kept) if reuse is not None else {}
    encoded = [j for j in range(hi - lo) if j not in taken]
    shard: torch.Tensor | None = None
    if taken:
        copied = torch.cat(list(taken.values()))
        shard = torch.empty(int(offsets[-1]), copied.shape[-1], dtype=dtype, device=device)
        target = np.concatenate([offsets[j] + np.arange(kept[j]) for j in taken])
        shard.index_copy_(0, torch.from_numpy(target).to(device), copied.to(device, dtype))
        if progress:
            progress(len(taken))
    for local in token_budget_batches(sorted(encoded, key=kept.__getitem__), kept.tolist(), batch_tokens):
        ids, real = padded_batch(token_ids, [lo + j for j in local], chroma_mask, pad_id)
        assert teacher is not None, "a prompt to encode with no teacher built"
        hidden = encode_teacher(teacher, ids.to(device), real.to(device)).to(dtype)
        width = hidden.shape[1]
        # Row r keeps its first kept[r] positions (Chroma's one visible pad is the column after its last token).
        source = np.concatenate([row * width + np.arange(kept[j]) for row, j in enumerate(local)])
        target = np.concatenate([offsets[j] + np.arange(kept[j]) for j in local])
        if shard is None:
            shard = torch.empty(int(offsets[-1]), hidden.shape[-1], dtype=dtype, device=device)
        rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, torch.from_numpy(source).to(device))
        shard.index_copy_(0, torch.from_numpy(target).to(device), rows)
        if progress:
            progress(len(local))
    assert shard is not None
    tokens = int(kept[encoded].sum()) - int(chroma_mask) * len(encoded)
    return shard, torch.from_numpy(offsets), tokens, len(taken)


Reuse = Callable[[int], "torch.Tensor | None"]  # rows already made for prompt i elsewhere, or None to encode it


def _taken_rows(reuse: Reuse, lo: int, hi: int, kept: np.ndarray) -> dict[int, torch.Tensor]:
    """The rows `reuse` has for prompts lo..hi-1, by local index; rows of another length than these prompts keep
    mean another tokenizer than the earlier cache's manifest names, so none of its rows can be trusted."""
    taken = {}
    for j in range(hi - lo):
        rows = reuse(lo + j)
        if rows is None:
            continue
        if rows.shape[0] != kept[j]:
            raise CacheMismatchError(
                f"the earlier cache holds {rows.shape[0]} positions for prompt {lo + j} (counted from 0) where its "
                f"tokens now take {kept[j]}: it was made with another tokenizer than its manifest says, so none of "
                "its rows can be taken; rerun without --reuse-from"
            )
        taken[j] = rows
    return taken


class CacheValuesError(UserFacingError, RuntimeError):
    """The teacher wrote NaN or inf: a cache of them would stop every run that reads it, hours later."""


def _overflow_hint(teacher: torch.nn.Module | None, dtype: str) -> str:
    """`teacher`: None when every shard is already written (the teacher is then never loaded)."""
    weights = next(teacher.parameters(), None) if teacher is not None else None
    if weights is not None and weights.dtype == torch.float16:
        return "the teacher runs in float16, where T5's activations overflow: set teacher.dtype: bfloat16 (or float32)"
    if dtype == "float16":
        return "teacher.cache.dtype float16 holds at most 65504: set it to bfloat16"
    return "the teacher's weights may hold NaN (a damaged download?): check them, or set teacher.dtype: float32"


def _check_finite(tensors: dict, largest: torch.Tensor, final: Path, first: int, hint: str) -> None:
    """`largest`: the shard's largest magnitude, reduced where the shard was encoded (NaN or inf if any value is)."""
    if bool(torch.isfinite(largest)):
        return
    hidden, offsets = tensors["hidden"], tensors["offsets"].tolist()
    bad = ~torch.isfinite(hidden.float()).all(-1)
    rows = [row for row in range(len(offsets) - 1) if bad[offsets[row] : offsets[row + 1]].any()]
    named = ", ".join(str(first + row) for row in rows[:5]) + (", ..." if len(rows) > 5 else "")
    raise CacheValuesError(
        f"the teacher's outputs for prompt(s) {named} of {final.parent} (counted from 0) hold NaN or inf, so "
        f"{final.name} was not written and nothing was lost: {hint}; then rerun `recipe cache`, which goes on from "
        "the shards already written"
    )


def _write_when_copied(
    copied: Callable[[], None],
    final: Path,
    tensors: dict,
    first: int,
    largest: torch.Tensor,
    hint: str,
    split: str | None,
    keys: str | None,
) -> None:
    copied()
    _check_finite(tensors, largest, final, first, hint)
    checksum = tensors_sha256(tensors["hidden"], tensors["offsets"])  # in this writer thread, beside encoding
    metadata = {"first": str(first), SUM_KEY: checksum, **({SPLIT_KEY: split} if split else {})}
    metadata.update({PROMPTS_KEY: keys} if keys is not None else {})
    save_safetensors_atomic(final, tensors, metadata=metadata)


def _copy_done(device: torch.device) -> Callable[[], None]:
    """A wait for the copies queued so far: a CUDA event on a GPU; on the CPU they are already done."""
    if device.type != "cuda":
        return lambda: None
    event = torch.cuda.Event()
    event.record()
    return event.synchronize


def write_split(
    split_dir: Path,
    token_ids: list[list[int]],
    teacher: torch.nn.Module | None,
    *,
    shard_size: int,
    batch_tokens: int,
    chroma_mask: bool,
    dtype: str,
    pad_id: int,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
    owns: Callable[[int], bool] = lambda shard: True,
    split: str | None = None,
    prompt_keys: list[str] | None = None,
    reuse: Reuse | None = None,
) -> dict[str, Any]:
    """Encode every missing or damaged shard; returns timing and size figures, and each damaged shard rewritten
    with the reason (`rewritten`), for reporting.

    An existing shard counts as done only when its header, size and row count check out (`shard_damage`); a
    damaged one is encoded again and replaced in one rename, and no other file is touched.

    `split` (the digest of the split's manifest) goes into each shard, and a shard of another split found here
    is encoded again. `owns` says which shards this process writes (every one, unless several processes share
    the cache); the others are neither checked nor counted here.

    A finished shard is copied to the host and written by a background thread while the next one is encoded
    (at most one write in flight, so at most two shards are held in host memory); an error in a write surfaces
    here, and an interrupted write leaves only a temporary file, so a rerun encodes that shard again.

    `prompt_keys` (each prompt's `prompt_key`) go into each shard, so that a later cache of edited data can take
    its rows (`reuse`); `teacher` may be None when `reuse` has every prompt still to write.
    """
    count = len(token_ids)
    hint = _overflow_hint(teacher, dtype)
    tokens = 0
    started = time.perf_counter()
    written = reused = 0
    rewritten: list[str] = []
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-shard-writer") as disk:
        writing: Future | None = None
        for shard in filter(owns, range(shard_count(count, shard_size))):
            final = split_dir / shard_name(shard)
            lo, hi = shard_rows(shard, count, shard_size)
            if final.exists():
                damage = shard_damage(final, lo, hi, split)
                if damage is None:
                    if progress:
                        progress(hi - lo)
                    continue
                rewritten.append(f"{final} ({damage})")
            hidden, offsets, shard_tokens, shard_reused = _shard_rows(
                teacher,
                token_ids,
                lo,
                hi,
                batch_tokens=batch_tokens,
                chroma_mask=chroma_mask,
                dtype=DTYPES[dtype],
                pad_id=pad_id,
                device=device,
                progress=progress,
                reuse=reuse,
            )
            tokens, reused = tokens + shard_tokens, reused + shard_reused
            # Into pinned host memory without waiting: the next shard's forward is queued behind the copy, and
            # the writer thread waits for it before writing.
            non_blocking = device.type == "cuda"
            host = hidden.to("cpu", non_blocking=non_blocking)
            largest = hidden.abs().amax() if hidden.numel() else hidden.new_zeros(())
            largest = largest.to("cpu", non_blocking=non_blocking)  # checked by the writer thread: no sync here
            copied = _copy_done(device)
            if writing is not None:
                writing.result()
            tensors = {"hidden": host, "offsets": offsets}
            keys = "".join(prompt_keys[lo:hi]) if prompt_keys is not None else None
            writing = disk.submit(_write_when_copied, copied, final, tensors, lo, largest, hint, split, keys)
            written += 1
        if writing is not None:
            writing.result()
    elapsed = time.perf_counter() - started
    return {"shards_written": written, "tokens": tokens, "seconds": elapsed, "rewritten": rewritten, "reused": reused}

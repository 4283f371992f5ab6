"""`recipe cache`: encode the prompts once; each shard appears under its final name only when complete."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch

from components.atomic_files import save_safetensors_atomic, write_json_atomic
from components.cache.manifest import mismatches, read_manifest
from components.data.batches import token_budget_batches
from components.teacher_outputs import encode_teacher

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class CacheMismatchError(RuntimeError):
    """The cache on disk was made from other settings or other prompts."""


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.safetensors"


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


def write_split(
    split_dir: Path,
    token_ids: list[list[int]],
    teacher: torch.nn.Module,
    *,
    shard_size: int,
    batch_tokens: int,
    chroma_mask: bool,
    dtype: str,
    pad_id: int,
    device: torch.device,
    progress: Callable[[int], None] | None = None,
) -> dict[str, float]:
    """Encode every missing shard; returns timing and size figures for reporting."""
    count = len(token_ids)
    tokens = 0
    started = time.perf_counter()
    written = 0
    padded = [len(ids) + int(chroma_mask) for ids in token_ids]
    for shard in range((count + shard_size - 1) // shard_size):
        final = split_dir / shard_name(shard)
        lo, hi = shard * shard_size, min(count, (shard + 1) * shard_size)
        if final.exists():
            if progress:
                progress(hi - lo)
            continue
        pieces: dict[int, torch.Tensor] = {}
        order = sorted(range(lo, hi), key=lambda i: len(token_ids[i]))
        for batch in token_budget_batches(order, padded, batch_tokens):
            width = max(len(token_ids[i]) for i in batch) + (1 if chroma_mask else 0)
            ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
            real = torch.zeros((len(batch), width), dtype=torch.bool)
            for row, i in enumerate(batch):
                ids[row, : len(token_ids[i])] = torch.tensor(token_ids[i])
                real[row, : len(token_ids[i])] = True
            hidden = encode_teacher(teacher, ids.to(device), real.to(device)).to("cpu", DTYPES[dtype])
            for row, i in enumerate(batch):
                keep = len(token_ids[i]) + (1 if chroma_mask and len(token_ids[i]) < width else 0)
                pieces[i] = hidden[row, :keep]
                tokens += len(token_ids[i])
            if progress:
                progress(len(batch))
        lengths = torch.tensor([pieces[i].shape[0] for i in range(lo, hi)], dtype=torch.long)
        offsets = torch.zeros(hi - lo + 1, dtype=torch.long)
        offsets[1:] = torch.cumsum(lengths, 0)
        hidden_all = torch.cat([pieces[i] for i in range(lo, hi)], dim=0)
        save_safetensors_atomic(final, {"hidden": hidden_all, "offsets": offsets}, metadata={"first": str(lo)})
        written += 1
    elapsed = time.perf_counter() - started
    return {"shards_written": written, "tokens": tokens, "seconds": elapsed}

"""`recipe cache`: encode the prompts once; each shard appears under its final name only when complete."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import torch

from components.atomic_files import save_safetensors_atomic, write_json_atomic
from components.cache.manifest import mismatches, read_manifest
from components.data.batches import token_budget_batches
from components.errors import UserFacingError
from components.teacher_outputs import encode_teacher

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


class CacheMismatchError(UserFacingError, RuntimeError):
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


def _host_batches(
    teacher: torch.nn.Module,
    token_ids: list[list[int]],
    batches: list[list[int]],
    *,
    chroma_mask: bool,
    dtype: torch.dtype,
    pad_id: int,
    device: torch.device,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(prompt indices, hidden states on the host) per batch, one batch late on CUDA: the copy of batch k to
    pinned host memory is waited for only after batch k+1's forward is queued, so the GPU is not left idle
    while the host slices rows and fills shards."""
    pending: tuple[list[int], torch.Tensor, Callable[[], None]] | None = None
    for batch in batches:
        ids, real = padded_batch(token_ids, batch, chroma_mask, pad_id)
        hidden = encode_teacher(teacher, ids.to(device), real.to(device)).to(dtype)
        host = hidden.to("cpu", non_blocking=device.type == "cuda")
        copied = _copy_done(device)
        if pending is not None:
            pending[2]()
            yield pending[0], pending[1]
        pending = (batch, host, copied)
    if pending is not None:
        pending[2]()
        yield pending[0], pending[1]


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
    """Encode every missing shard; returns timing and size figures for reporting.

    A finished shard is written by a background thread while the next one is encoded (at most one write in
    flight, so at most two shards are held in memory); an error in a write surfaces here, and an interrupted
    write leaves only a temporary file, so a rerun encodes that shard again.
    """
    count = len(token_ids)
    tokens = 0
    started = time.perf_counter()
    written = 0
    padded = [len(ids) + int(chroma_mask) for ids in token_ids]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cache-shard-writer") as disk:
        writing: Future | None = None
        for shard in range((count + shard_size - 1) // shard_size):
            final = split_dir / shard_name(shard)
            lo, hi = shard * shard_size, min(count, (shard + 1) * shard_size)
            if final.exists():
                if progress:
                    progress(hi - lo)
                continue
            pieces: dict[int, torch.Tensor] = {}
            order = sorted(range(lo, hi), key=lambda i: len(token_ids[i]))
            batches = token_budget_batches(order, padded, batch_tokens)
            for batch, hidden in _host_batches(
                teacher, token_ids, batches, chroma_mask=chroma_mask, dtype=DTYPES[dtype], pad_id=pad_id, device=device
            ):
                width = hidden.shape[1]
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
            if writing is not None:
                writing.result()
            tensors = {"hidden": hidden_all, "offsets": offsets}
            writing = disk.submit(save_safetensors_atomic, final, tensors, metadata={"first": str(lo)})
            written += 1
        if writing is not None:
            writing.result()
    elapsed = time.perf_counter() - started
    return {"shards_written": written, "tokens": tokens, "seconds": elapsed}

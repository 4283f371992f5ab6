"""Memory-mapped access to cached teacher outputs, one prompt at a time (safe in loader workers)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open

from components.cache.manifest import read_manifest
from components.cache.writer import shard_name
from components.errors import UserFacingError


class CacheIncompleteError(UserFacingError, RuntimeError):
    """Some shards are missing: the cache command was interrupted."""


class CachedTeacher:
    """Teacher hidden states of one data split; shards are opened lazily so each worker maps its own."""

    def __init__(self, split_dir: Path) -> None:
        self.split_dir = Path(split_dir)
        manifest = read_manifest(self.split_dir)
        if manifest is None:
            raise CacheIncompleteError(f"no cache manifest in {self.split_dir}")
        self.count: int = manifest["count"]
        self.shard_size: int = manifest["shard_size"]
        shards = (self.count + self.shard_size - 1) // self.shard_size
        missing = [shard_name(s) for s in range(shards) if not (self.split_dir / shard_name(s)).exists()]
        if missing:
            raise CacheIncompleteError(
                f"cache {self.split_dir} is incomplete ({len(missing)} of {shards} shards missing); "
                "rerun `recipe cache` to finish it"
            )
        self._open: dict[int, tuple[object, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.count

    def _shard(self, shard: int) -> tuple[object, torch.Tensor]:
        if shard not in self._open:
            handle = safe_open(str(self.split_dir / shard_name(shard)), framework="pt")
            self._open[shard] = (handle, handle.get_tensor("offsets"))
        return self._open[shard]

    def __getitem__(self, index: int) -> torch.Tensor:
        shard, row = divmod(index, self.shard_size)
        handle, offsets = self._shard(shard)
        lo, hi = int(offsets[row]), int(offsets[row + 1])
        return handle.get_slice("hidden")[lo:hi]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_open"] = {}
        return state

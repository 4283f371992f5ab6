"""Teacher outputs already in an earlier cache, found by prompt: a cache of edited data (prompts added, fixed or
moved between splits) copies them instead of running the teacher again, which for T5-XXL is hours.

The earlier cache is only read. A row is taken only from a shard whose split was made with the same teacher
settings (`mismatches` is empty), whose header checks out and whose values match the SHA-256 written with them,
so a damaged byte is never carried into a new shard under a fresh checksum.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from components.cache.manifest import MANIFEST, mismatches, read_manifest
from components.cache.shards import (
    PROMPTS_KEY,
    content_damage,
    shard_count,
    shard_damage,
    shard_name,
    shard_rows,
    split_digest,
)
from components.data.prompts import KEY_LENGTH
from components.errors import UserFacingError


def reuse_hint(cache_dir: str) -> str:
    """What a message about edited prompts offers beside deleting the cache."""
    return (
        f"or point teacher.cache.dir at a new directory and add `--reuse-from {cache_dir}` to `recipe cache`, which "
        "copies the outputs of the prompts already there and encodes only the others"
    )


class CacheReuseError(UserFacingError, RuntimeError):
    """`--reuse-from` names something no row can be taken from."""


def _keys(path: Path) -> list[str] | None:
    """The prompt keys a shard's metadata lists, in row order; None for a shard written before shards kept them."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            joined = (handle.metadata() or {}).get(PROMPTS_KEY)
    except (SafetensorError, OSError):
        return None
    if joined is None or len(joined) % KEY_LENGTH:
        return None
    return [joined[i : i + KEY_LENGTH] for i in range(0, len(joined), KEY_LENGTH)]


class ReusableRows:
    """Where each prompt's rows are in the earlier cache at `source` (every split there, so a prompt moved from
    eval to train is found too)."""

    def __init__(self, source: Path, identity: dict) -> None:
        self.source = Path(source)
        self._where: dict[str, tuple[Path, int]] = {}
        self._checked: dict[Path, str | None] = {}
        self._open: tuple[Path, object] | None = None  # the shard last read: rows are mostly taken in its order
        self.skipped: list[str] = []  # what could not be used, in words, for the report
        if not self.source.is_dir():
            raise CacheReuseError(
                f"--reuse-from {self.source}: no such directory (give an earlier teacher.cache.dir, or drop "
                "--reuse-from)"
            )
        # A cache directory, or one split of it.
        splits = (
            [self.source]
            if (self.source / MANIFEST).is_file()
            else sorted(p for p in self.source.iterdir() if p.is_dir())
        )
        other_settings: list[str] = []
        without_keys = manifests = 0
        for split_dir in splits:
            try:
                manifest = read_manifest(split_dir)
            except (OSError, json.JSONDecodeError):
                self.skipped.append(f"{split_dir}: its manifest cannot be read")
                continue
            if manifest is None:
                continue
            manifests += 1
            differences = mismatches(manifest, identity)
            if differences:
                other_settings.append(f"{split_dir.name}: {'; '.join(differences)}")
                continue
            without_keys += self._index(split_dir, manifest)
        if not self._where:
            raise CacheReuseError(self._nothing_usable(manifests, other_settings, without_keys))
        self.skipped += [f"{self.source}/{words}" for words in other_settings]
        if without_keys:
            self.skipped.append(f"{without_keys} shard(s) in {self.source} written before shards named their prompts")

    def _index(self, split_dir: Path, manifest: dict) -> int:
        """Adds the rows of the split's whole shards; returns how many shards name no prompts."""
        count, size, digest = manifest.get("count"), manifest.get("shard_size"), split_digest(manifest)
        if not isinstance(count, int) or not isinstance(size, int) or size < 1:
            self.skipped.append(f"{split_dir}: its manifest lacks its prompt count or shard size")
            return 0
        without_keys = 0
        for shard in range(shard_count(count, size)):
            path = split_dir / shard_name(shard)
            lo, hi = shard_rows(shard, count, size)
            if not path.is_file():
                continue  # not finished: its prompts are encoded
            damage = shard_damage(path, lo, hi, digest)
            if damage is not None:
                self.skipped.append(f"{path}: {damage}; its prompts are encoded")
                continue
            keys = _keys(path)
            if keys is None or len(keys) != hi - lo:
                without_keys += 1
                continue
            for row, key in enumerate(keys):
                self._where.setdefault(key, (path, row))
        return without_keys

    def _nothing_usable(self, manifests: int, other_settings: list[str], without_keys: int) -> str:
        start = f"--reuse-from {self.source}: no teacher outputs can be taken from it"
        if other_settings:
            return (
                f"{start}: it was made with other settings ({' / '.join(other_settings)}): put them back in the "
                "recipe to reuse it, or drop --reuse-from"
            )
        if without_keys:
            return (
                f"{start}: its {without_keys} shard(s) were written before shards named their prompts, so nothing "
                "says which prompt a row belongs to; rerun `recipe cache` in full"
            )
        if not manifests:
            return (
                f"{start}: it is no teacher.cache.dir (one holds train/ and eval/, each with a manifest.json): give "
                "one, or one of its splits"
            )
        return f"{start}: it holds no finished shard"

    def has(self, key: str) -> bool:
        return key in self._where

    def usable(self, keys: set[str]) -> set[str]:
        """The keys among `keys` whose shard's values check out against their SHA-256 (each shard read once);
        the others are named in `skipped` and encoded."""
        found = {key for key in keys if key in self._where}
        for path in sorted({self._where[key][0] for key in found}):
            if path not in self._checked:
                self._checked[path] = content_damage(path)
                if self._checked[path] is not None:
                    self.skipped.append(f"{path}: {self._checked[path]}; its prompts are encoded")
        return {key for key in found if self._checked[self._where[key][0]] is None}

    def rows(self, key: str) -> torch.Tensor:
        """The prompt's kept rows (its tokens, plus Chroma's one visible pad when the cache keeps it)."""
        path, row = self._where[key]
        if self._open is None or self._open[0] != path:
            self._open = (path, safe_open(str(path), framework="pt"))
        handle = self._open[1]
        offsets = handle.get_slice("offsets")[row : row + 2]
        return handle.get_slice("hidden")[int(offsets[0]) : int(offsets[1])]

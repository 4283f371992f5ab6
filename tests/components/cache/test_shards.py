"""shard_damage: a shard counts as whole only when its header, size, row count and offsets fit the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.atomic_files import save_safetensors_atomic
from components.cache.shards import shard_count, shard_damage, shard_rows


def _shard(path: Path, rows: int, first: int, tokens: int | None = None, **replace) -> Path:
    offsets = torch.arange(rows + 1) * 2
    tensors = {"hidden": torch.ones(int(offsets[-1]) if tokens is None else tokens, 4), "offsets": offsets, **replace}
    save_safetensors_atomic(path, {k: v for k, v in tensors.items() if v is not None}, metadata={"first": str(first)})
    return path


def test_rows_of_each_shard():
    assert shard_count(10, 4) == 3 and shard_count(8, 4) == 2
    assert [shard_rows(s, 10, 4) for s in range(3)] == [(0, 4), (4, 8), (8, 10)]


def test_a_whole_shard_passes(tmp_path):
    assert shard_damage(_shard(tmp_path / "s", 2, 8), 8, 10) is None


@pytest.mark.parametrize(
    ("shard", "expected"),
    [
        ({"rows": 3, "first": 8}, "it holds 3 prompts where the manifest expects 2"),
        ({"rows": 2, "first": 4}, "it starts at prompt 4, not 8"),
        ({"rows": 2, "first": 8, "tokens": 5}, "row offsets do not match its hidden states"),
        ({"rows": 2, "first": 8, "offsets": torch.tensor([0, 3, 1])}, "row offsets do not match"),
        ({"rows": 2, "first": 8, "hidden": None}, "lacks the `hidden` or `offsets` tensor"),
    ],
)
def test_a_shard_of_another_layout_is_damaged(tmp_path, shard, expected):
    assert expected in shard_damage(_shard(tmp_path / "s", **shard), 8, 10)


def test_a_truncated_or_missing_shard_is_damaged(tmp_path):
    path = _shard(tmp_path / "s", 2, 8)
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    assert "cut short" in shard_damage(path, 8, 10)
    assert "cannot be read" in shard_damage(tmp_path / "missing", 8, 10)

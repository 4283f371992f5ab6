"""A team's teacher cache on a read-only mount: runs read it without a lock, `recipe cache` only checks it."""

from __future__ import annotations

from pathlib import Path

import pytest
from tiny_cache import TRAIN

from recipe_runner.teacher_cache import CACHE_LOCK, CacheSetupError, build_teacher_cache


def _read_only_lock(monkeypatch, cache_dir: Path) -> None:
    """The cache on a read-only mount: no lock file there, and none can be created."""
    (cache_dir / CACHE_LOCK).unlink(missing_ok=True)
    opened = Path.open

    def read_only(path, mode="r", *args, **kwargs):
        if path.name == CACHE_LOCK:
            raise OSError(30, "Read-only file system", str(path))
        return opened(path, mode, *args, **kwargs)

    monkeypatch.setattr(Path, "open", read_only)


def _no_teacher_load(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the teacher was loaded although every shard was on disk")

    monkeypatch.setattr("recipe_runner.teacher_cache.build_model", refuse)


def test_a_cache_the_run_cannot_write_is_read_without_a_lock(copy, monkeypatch):
    from recipe_runner.trainer.loop import Trainer

    recipe, cache_dir = copy
    _read_only_lock(monkeypatch, cache_dir)
    trainer = Trainer(recipe, progress=False)
    try:
        assert trainer.parts.train.cache is not None
    finally:
        trainer._release_locks()


def test_a_complete_cache_is_checked_without_loading_the_teacher(copy, monkeypatch):
    recipe, _ = copy
    _no_teacher_load(monkeypatch)
    reports = build_teacher_cache(recipe, progress=False)
    assert {split: report["shards_written"] for split, report in reports.items()} == {"train": 0, "eval": 0}
    assert reports["train"]["count"] == TRAIN and reports["train"]["bytes"] > 0


def test_a_complete_cache_on_a_read_only_mount_checks_out(copy, monkeypatch):
    recipe, cache_dir = copy
    _read_only_lock(monkeypatch, cache_dir)
    _no_teacher_load(monkeypatch)
    reports = build_teacher_cache(recipe, progress=False)
    assert reports["train"]["shards_written"] == 0 and reports["eval"]["shards_written"] == 0


def test_an_incomplete_cache_on_a_read_only_mount_says_to_point_elsewhere(copy, monkeypatch):
    recipe, cache_dir = copy
    (cache_dir / "train" / "shard-00001.safetensors").unlink()
    _read_only_lock(monkeypatch, cache_dir)
    _no_teacher_load(monkeypatch)
    with pytest.raises(CacheSetupError, match=r"cannot be written \(Read-only file system\) and the cache there"):
        build_teacher_cache(recipe, progress=False)

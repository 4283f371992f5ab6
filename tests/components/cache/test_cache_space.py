"""`recipe cache` sizes the shards it still has to write and refuses a disk too small before the teacher loads."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest

import recipe_runner.teacher_cache as teacher_cache
from components.cache.shards import missing_shard_bytes, shard_name
from components.disk_space import NotEnoughDiskSpace
from components.models import load_tokenizer
from recipe_runner.loader import load_recipe
from recipe_runner.teacher_cache import build_teacher_cache
from recipe_runner.trainer.parts import split_prompts

ROOT = Path(__file__).parents[3]
TINY = ROOT / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"
PROMPTS = ROOT / "data" / "prompts"
Usage = namedtuple("Usage", "total used free")
TEACHER_WIDTH = 64  # the tiny T5, cached in float32 (4 bytes a value)


def _recipe(cache_dir: Path):
    return load_recipe(
        TINY,
        [
            f"teacher.cache.dir={cache_dir}",
            "teacher.cache.shard_size=4",
            f"output.dir={cache_dir.parent / 'run'}",
            f"data.train={{path: {PROMPTS / 'train.txt'}, limit: 10}}",
            f"data.eval={{path: {PROMPTS / 'eval.txt'}, limit: 3}}",
        ],
    ).recipe


def _train_ids(recipe) -> list[list[int]]:
    train, _ = split_prompts(recipe)
    return load_tokenizer(recipe.teacher)(train, truncation=True, max_length=recipe.teacher.max_length)["input_ids"]


def test_missing_shards_are_sized_as_they_are_written(tmp_path):
    recipe = _recipe(tmp_path / "cache")
    ids, split_dir = _train_ids(recipe), tmp_path / "cache" / "train"
    before = missing_shard_bytes(split_dir, ids, 4, True, TEACHER_WIDTH, 4)
    build_teacher_cache(recipe, progress=False)
    written = sorted(split_dir.glob("shard-*.safetensors"))
    assert before[0] == len(written) == 3
    actual = sum(path.stat().st_size for path in written)
    assert actual <= before[1] <= actual + 3 * 4096, (actual, before)
    assert missing_shard_bytes(split_dir, ids, 4, True, TEACHER_WIDTH, 4) == (0, 0)
    victim = split_dir / shard_name(1)
    size = victim.stat().st_size
    victim.write_bytes(b"not a shard")  # damaged counts as missing
    count, needed = missing_shard_bytes(split_dir, ids, 4, True, TEACHER_WIDTH, 4)
    assert count == 1 and size <= needed <= size + 4096


def test_a_cache_too_big_for_the_disk_is_refused_before_the_teacher_loads(tmp_path, monkeypatch):
    recipe = _recipe(tmp_path / "cache")

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was built although the cache cannot fit")

    monkeypatch.setattr(teacher_cache, "build_model", no_teacher)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 0, 1000))
    with pytest.raises(NotEnoughDiskSpace) as caught:
        build_teacher_cache(recipe, progress=False)
    message = str(caught.value)
    assert "4 cache shard(s) still to write" in message and "(64 float32 values per token)" in message
    assert "1,000 bytes are free" not in message and "1000 bytes are free" in message
    assert "--set teacher.cache.dir=" in message
    left = [p.name for p in (tmp_path / "cache").rglob("*") if p.name.startswith("shard-") or p.name.endswith(".json")]
    assert left == [], "no shard, and no manifest to hold a rerun to these settings"
    monkeypatch.undo()
    smaller = _recipe(tmp_path / "cache").model_copy(deep=True)
    smaller.teacher.cache.dtype = "bfloat16"  # what one does about a cache too big
    assert build_teacher_cache(smaller, progress=False)["train"]["shards_written"] > 0

"""The tiny recipe set up for teacher-cache tests (the cache itself: `built` and `copy` in conftest.py)."""

from __future__ import annotations

from pathlib import Path

from recipe_runner.loader import load_recipe

ROOT = Path(__file__).parents[3]
TINY = ROOT / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"
PROMPTS = ROOT / "data" / "prompts"
TRAIN, EVAL, SHARD = 10, 3, 4


def load_cache_recipe(cache_dir: Path, *extra: str, check: bool = True):
    """`check=False`: the recipe as a run receives it when validate is skipped (the run's own refusals)."""
    return load_recipe(
        TINY,
        [
            f"teacher.cache.dir={cache_dir}",
            f"teacher.cache.shard_size={SHARD}",
            f"output.dir={cache_dir.parent / 'run'}",
            f"data.train={{path: {PROMPTS / 'train.txt'}, limit: {TRAIN}}}",
            f"data.eval={{path: {PROMPTS / 'eval.txt'}, limit: {EVAL}}}",
            *extra,
        ],
        check=check,
    ).recipe

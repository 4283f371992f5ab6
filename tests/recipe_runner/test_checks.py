"""Semantic checks around the teacher cache: a broken teacher source is reported once, with no cache noise."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.cache.manifest import teacher_identity
from components.cache.writer import prepare_split
from recipe_runner.errors import RecipeError
from recipe_runner.loader import load_recipe

TINY = Path(__file__).resolve().parents[2] / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"


def _problems(tmp_path: Path, *overrides: str) -> list[str]:
    sets = [f"output.dir={tmp_path / 'run'}", f"teacher.cache.dir={tmp_path / 'cache'}", *overrides]
    with pytest.raises(RecipeError) as caught:
        load_recipe(TINY, sets)
    return [str(problem) for problem in caught.value.problems]


@pytest.fixture
def cache_of_the_tiny_teacher(tmp_path: Path) -> None:
    """A manifest per split, as `recipe cache` leaves it (no shards needed for the comparison)."""
    recipe = load_recipe(TINY, [f"output.dir={tmp_path / 'run'}", f"teacher.cache.dir={tmp_path / 'cache'}"]).recipe
    for split in ("train", "eval"):
        prepare_split(tmp_path / "cache" / split, teacher_identity(recipe), "digest", 10, 4)


def test_a_missing_teacher_path_is_the_one_problem(tmp_path, cache_of_the_tiny_teacher):
    problems = _problems(tmp_path, "teacher.config=null", "teacher.model=/nope")
    assert len(problems) == 1, problems
    assert "teacher.model: local path '/nope' does not exist" in problems[0]


def test_another_teacher_is_one_problem_for_both_splits_without_none(tmp_path, cache_of_the_tiny_teacher):
    problems = _problems(tmp_path, "teacher.config.d_ff=256")
    assert len(problems) == 1, problems
    assert "(eval and train)" in problems[0] and "inline config differs" in problems[0]
    assert "None" not in problems[0]

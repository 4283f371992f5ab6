"""Teacher-cache fixtures: the tiny recipe's cache built once per test module, and copies to change."""

from __future__ import annotations

import shutil

import pytest
from tiny_cache import load_cache_recipe

from recipe_runner.teacher_cache import build_teacher_cache


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One cache built once; tests that change it work on a copy."""
    cache_dir = tmp_path_factory.mktemp("built") / "cache"
    recipe = load_cache_recipe(cache_dir)
    reports = build_teacher_cache(recipe, batch_tokens=96, progress=False)
    return recipe, cache_dir, reports


@pytest.fixture
def copy(built, tmp_path):
    _, cache_dir, _ = built
    target = tmp_path / "cache"
    shutil.copytree(cache_dir, target)
    return load_cache_recipe(target), target

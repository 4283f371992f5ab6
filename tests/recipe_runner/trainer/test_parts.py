"""Splitting the prompts into train and held-out eval."""

from __future__ import annotations

import pytest

from components.data.prompts import DataFileError
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.parts import split_prompts


def _recipe(tiny_recipe_path, tiny_overrides, tmp_path, prompts: int, fraction: float):
    train = tmp_path / "train.txt"
    train.write_text("".join(f"a prompt number {i}\n" for i in range(prompts)))
    sets = [*tiny_overrides, f"data.train={train}", "data.eval=null", f"data.eval_fraction={fraction}"]
    return load_recipe(tiny_recipe_path, sets).recipe


def test_a_fraction_holds_out_the_first_prompts(tiny_recipe_path, tiny_overrides, tmp_path):
    train, held = split_prompts(_recipe(tiny_recipe_path, tiny_overrides, tmp_path, prompts=10, fraction=0.2))
    assert held == ["a prompt number 0", "a prompt number 1"] and len(train) == 8


def test_a_fraction_that_leaves_nothing_to_train_on_says_so(tiny_recipe_path, tiny_overrides, tmp_path):
    recipe = _recipe(tiny_recipe_path, tiny_overrides, tmp_path, prompts=1, fraction=0.5)
    with pytest.raises(DataFileError, match=r"holds out all 1 prompt\(s\) of .*train.txt, leaving none to train on"):
        split_prompts(recipe)


def test_a_run_whose_cache_is_not_written_says_the_teacher_runs_beside_it(tiny_recipe_path, tiny_overrides, capsys):
    """`recipe plan` sized the run with its cache: holding the teacher instead is said, not done silently."""
    from recipe_runner.trainer.loop import Trainer

    steps = ["stages.0.epochs=null", "stages.0.steps=1", "output.export=false", "data.train.limit=8"]
    recipe = load_recipe(tiny_recipe_path, [*tiny_overrides, *steps]).recipe
    Trainer(recipe, progress=False).run()
    assert f"teacher.cache.dir {recipe.teacher_cache.dir} holds no complete cache" in capsys.readouterr().err

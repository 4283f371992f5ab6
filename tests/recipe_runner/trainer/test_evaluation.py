"""What an embedding stage's evaluation tells beyond its losses: pair counts per tier, and losses on empty tiers."""

from __future__ import annotations

from pathlib import Path

from recipe_runner.loader import load_recipe
from recipe_runner.trainer.evaluation import empty_tier_warnings

TINY = Path(__file__).resolve().parents[3] / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"


def test_a_weighted_loss_on_a_tier_without_pairs_is_said_once_and_others_are_not():
    """A cosine on the window tier of the tiny tokenizers logged 0.0 (a perfect fit, it read) and trained nothing."""
    losses = (
        "stages.0.losses=[{type: cosine, on: window}, {type: huber, on: matched}, {type: mse, on: split, weight: 0}]"
    )
    stage = load_recipe(TINY, [losses], check=False).recipe.stages[0]
    metrics = {"eval/window/pairs": 0.0, "eval/matched/pairs": 120.0, "eval/split/pairs": 0.0}
    [line] = empty_tier_warnings(0, stage, metrics)
    assert line.startswith("warning: stages[0].losses[0] (cosine on window): the window tier found no pairs")
    assert empty_tier_warnings(0, stage, {}) == [], "no counts (a logits stage): nothing to say"

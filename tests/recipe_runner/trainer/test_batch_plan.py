"""Batch ordering: loading batches draws nothing from torch's global random numbers."""

from __future__ import annotations

import itertools

import torch

from recipe_runner.loader import load_recipe
from recipe_runner.trainer.checkpoint import Position
from recipe_runner.trainer.loop import Trainer


def test_loading_batches_leaves_torchs_random_numbers_alone(tiny_recipe_path, tiny_overrides):
    # A resume restores the global generator and then builds its loader at another point than the first run did;
    # a draw there shifted every later stochastic rounding (bf16_stochastic runs resumed unlike uninterrupted).
    trainer = Trainer(load_recipe(tiny_recipe_path, tiny_overrides).recipe, progress=False)
    try:
        before = torch.get_rng_state()
        next(trainer.batches.stream(0, Position()))
        next(trainer.batches.eval_batches())
        assert torch.equal(torch.get_rng_state(), before)
    finally:
        trainer._release_locks()


def test_a_resume_with_another_batch_count_continues_where_no_batch_is_skipped(tiny_recipe_path, tiny_overrides):
    trainer = Trainer(load_recipe(tiny_recipe_path, tiny_overrides).recipe, progress=False)
    try:
        now = len(trainer.batches.epoch_order(0, 0))
        stage = trainer.recipe.stages[0]
        for done, before in itertools.product(range(6), range(6, 3 * now)):  # earlier counts, up and down
            position = Position(batch=done, epoch_batches=before)
            trainer.batches.rescale(0, stage, position)
            assert position.batch * before <= done * now  # at the same fraction of the epoch or before it
            assert (position.batch + 1) * before > done * now  # by less than a batch
    finally:
        trainer._release_locks()

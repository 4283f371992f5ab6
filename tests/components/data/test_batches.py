"""Length-bucketed training batches and token-budget batches (teacher cache, training with batch_tokens)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from components.data.batches import bucketed_batches, shard_batches, token_budget_batches


def test_short_prompts_share_a_batch_long_ones_do_not():
    lengths = [10, 10, 10, 10, 300, 300]
    assert token_budget_batches(list(range(6)), lengths, budget=600) == [[0, 1, 2, 3], [4, 5]]
    assert token_budget_batches(list(range(6)), lengths, budget=400) == [[0, 1, 2, 3], [4], [5]]


def test_a_prompt_over_the_budget_gets_a_batch_of_its_own():
    assert token_budget_batches([0, 1, 2], [5, 50, 5], budget=20) == [[0], [1], [2]]


@given(
    st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=80),
    st.integers(1, 4096),
    st.one_of(st.none(), st.integers(1, 20)),
)
def test_every_prompt_once_in_order_and_within_budget(lengths, budget, max_items):
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches = token_budget_batches(order, lengths, budget, max_items)
    assert [i for batch in batches for i in batch] == order
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= budget
        assert max_items is None or len(batch) <= max_items


def test_the_prompt_cap_closes_a_batch_before_the_budget():
    assert token_budget_batches(list(range(5)), [10] * 5, budget=1000, max_items=2) == [[0, 1], [2, 3], [4]]


def _lengths(count: int, seed: int = 3) -> list[int]:
    rng = np.random.default_rng(seed)
    return [int(n) for n in np.clip(rng.lognormal(4.3, 0.6, count), 4, 512)]


@given(st.integers(0, 50), st.sampled_from([None, 512, 2048, 8192]))
def test_training_batches_cover_the_epoch_once_and_respect_both_caps(epoch, batch_tokens):
    lengths = _lengths(1500)
    batches = bucketed_batches(lengths, 64, shuffle=True, seed=7, epoch=epoch, batch_tokens=batch_tokens)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= 64
        if batch_tokens is not None:
            assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= batch_tokens
    again = bucketed_batches(lengths, 64, shuffle=True, seed=7, epoch=epoch, batch_tokens=batch_tokens)
    assert again == batches  # a resumed run rebuilds the same epoch


def test_a_token_budget_puts_more_short_prompts_in_a_batch_than_long_ones():
    lengths = _lengths(4000)
    batches = bucketed_batches(lengths, 512, shuffle=True, seed=0, epoch=0, batch_tokens=4096)
    by_longest = sorted(batches, key=lambda batch: max(lengths[i] for i in batch))
    assert len(by_longest[0]) > 4 * len(by_longest[-1])
    padded = sorted(len(batch) * max(lengths[i] for i in batch) for batch in batches)
    assert padded[1] > 4096 // 2  # one window here: every batch but its remainder is well filled


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("count", [1, 2, 3, 5, 8])
def test_every_process_gets_as_many_batches_and_together_they_cover_every_one(count, world):
    batches = [[index] for index in range(count)]
    shares = [shard_batches(batches, rank, world) for rank in range(world)]
    assert {len(share) for share in shares} == {-(-count // world)}  # none waits on the others, none is empty
    assert sorted({tuple(batch) for share in shares for batch in share}) == [tuple(b) for b in batches]
    assert sum(len(share) for share in shares) - count < world  # topped up by fewer than one batch per process

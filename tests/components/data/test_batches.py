"""Token-budget batches for inference-only passes (the teacher cache)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from components.data.batches import token_budget_batches


def test_short_prompts_share_a_batch_long_ones_do_not():
    lengths = [10, 10, 10, 10, 300, 300]
    assert token_budget_batches(list(range(6)), lengths, budget=600) == [[0, 1, 2, 3], [4, 5]]
    assert token_budget_batches(list(range(6)), lengths, budget=400) == [[0, 1, 2, 3], [4], [5]]


def test_a_prompt_over_the_budget_gets_a_batch_of_its_own():
    assert token_budget_batches([0, 1, 2], [5, 50, 5], budget=20) == [[0], [1], [2]]


@given(st.lists(st.integers(min_value=1, max_value=600), min_size=1, max_size=80), st.integers(1, 4096))
def test_every_prompt_once_in_order_and_within_budget(lengths, budget):
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    batches = token_budget_batches(order, lengths, budget)
    assert [i for batch in batches for i in batch] == order
    for batch in batches:
        assert len(batch) == 1 or len(batch) * max(lengths[i] for i in batch) <= budget

"""Length-bucketed batches: prompts of similar length share a batch, so little compute goes to padding."""

from __future__ import annotations

import numpy as np


def bucketed_batches(
    lengths: list[int],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    epoch: int,
    batch_tokens: int | None = None,
    bucket_batches: int = 50,
) -> list[list[int]]:
    """Deterministic per (seed, epoch): shuffle, sort within windows of `bucket_batches` batches, cut each window
    into batches (of `batch_size` prompts, or also closed at `batch_tokens` padded tokens), shuffle batches."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths)) if shuffle else np.arange(len(lengths))
    window = batch_size * bucket_batches
    batches: list[list[int]] = []
    for start in range(0, len(order), window):
        chunk = order[start : start + window]
        chunk = chunk[np.argsort([lengths[i] for i in chunk], kind="stable")].tolist()
        if batch_tokens is None:
            batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        else:
            batches += token_budget_batches(chunk, lengths, batch_tokens, max_items=batch_size)
    if shuffle:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def token_budget_batches(
    ordered: list[int], lengths: list[int], budget: int, max_items: int | None = None
) -> list[list[int]]:
    """Consecutive runs of `ordered` (sorted by length) whose padded size, count x longest, stays within `budget`
    and whose count stays within `max_items`.

    Passes that should fill the device by tokens, not by a prompt count (the teacher cache, training with
    `batch_tokens`): short prompts go many to a batch, long ones few. A prompt longer than the budget gets a
    batch of its own.
    """
    batches: list[list[int]] = []
    current: list[int] = []
    longest = 0
    for index in ordered:
        widest = max(longest, lengths[index])
        full = max_items is not None and len(current) >= max_items
        if current and (full or widest * (len(current) + 1) > budget):
            batches.append(current)
            current, widest = [], lengths[index]
        current.append(index)
        longest = widest
    if current:
        batches.append(current)
    return batches


def shard_batches(batches: list[list[int]], rank: int, world: int) -> list[list[int]]:
    """Every process gets the same number of batches, so no process waits on a collective forever. An epoch whose
    batches do not share out evenly is topped up with its first batches again, as torch's DistributedSampler
    tops up its samples: dropping the rest instead left prompts out of every epoch (the same ones, unshuffled),
    and an epoch of fewer batches than processes with none at all for some, which then waited forever."""
    padded = -(-len(batches) // world) * world
    return [batches[index % len(batches)] for index in range(rank, padded, world)]

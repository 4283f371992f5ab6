"""Each process of a run draws its own random numbers after the shared start, and a checkpoint keeps them all."""

from __future__ import annotations

import random

import numpy as np
import torch

from recipe_runner.trainer.random_streams import for_checkpoint, own_stream, process_state, restore


def _draws() -> tuple:
    return torch.rand(4).tolist(), random.random(), float(np.random.rand())


def test_the_first_process_stays_on_the_shared_stream_and_the_others_leave_it_alike_each_time():
    torch.manual_seed(3), random.seed(3), np.random.seed(3)
    shared = process_state()
    own_stream(0)
    first = _draws()
    streams = {}
    for rank in (1, 2, 1):
        restore(*shared, rank=0, processes=1)
        own_stream(rank)
        streams.setdefault(rank, []).append(_draws())
    restore(*shared, rank=0, processes=1)
    assert _draws() == first, "one process draws as it always did"
    assert streams[1][0] == streams[1][1], "the same seed gives the same stream of process 1"
    assert len({str(first), str(streams[1][0]), str(streams[2][0])}) == 3, "three processes, three streams"


def test_a_checkpoint_of_two_processes_gives_each_its_own_stream_back():
    states, expected = [], []
    for seed in (11, 12):
        torch.manual_seed(seed), random.seed(seed), np.random.seed(seed)
        states.append(process_state())
        expected.append(_draws())
    tensors, meta = for_checkpoint(states)
    assert set(tensors) == {"torch_cpu", "rank1/torch_cpu"} | {k for k in tensors if "cuda" in k}
    for rank in (0, 1):
        torch.manual_seed(99)
        restore(tensors, meta, rank=rank, processes=2)
        assert _draws() == expected[rank]


def test_another_process_count_or_an_older_checkpoint_starts_the_others_from_the_first():
    torch.manual_seed(5), random.seed(5), np.random.seed(5)
    older = process_state()  # as a checkpoint of one process (or written before processes kept their own) holds
    first = _draws()
    tensors, meta = for_checkpoint([older])
    restore(tensors, meta, rank=0, processes=3)
    assert _draws() == first
    seen = []
    for rank in (1, 2):
        restore(tensors, meta, rank=rank, processes=3)
        seen.append(_draws())
    assert first not in seen and seen[0] != seen[1]

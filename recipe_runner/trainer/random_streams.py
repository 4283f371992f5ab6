"""The random streams of a run: one shared by every process while the models are built (so their weights start
alike), then one per process (dropout, denoising spans, on-policy coins and samples differ between processes as
they would between batches of one process), each kept in a checkpoint so that a resumed run draws as the whole
run did."""

from __future__ import annotations

import random

import numpy as np
import torch
from accelerate.utils import set_seed

State = tuple[dict[str, torch.Tensor], dict]  # tensors for safetensors, the rest for JSON
_OF_RANK = "rank{}/"  # the prefix of another process's tensors in a checkpoint's rng.safetensors


def own_stream(rank: int) -> None:
    """Process `rank` leaves the shared stream for one of its own; the first process stays on it, so that a run
    of one process draws as it always did. The seed is drawn from the shared stream: the same in every process,
    and set by `hardware.seed`."""
    if rank > 0:
        set_seed(int(torch.randint(0, 2**31, ())) + rank)  # numpy takes seeds below 2**32


def process_state() -> State:
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{index}"] = state
    py = random.getstate()
    return tensors, {"python": [py[0], list(py[1]), py[2]], "numpy": np.random.get_state(legacy=False)}


def _restore(tensors: dict[str, torch.Tensor], meta: dict) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        states = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(meta["numpy"])


def for_checkpoint(states: list[State]) -> State:
    """Every process's state (in process order) as one checkpoint's: the first under the names a checkpoint of
    one process has always used, the others prefixed with their rank."""
    tensors, meta = dict(states[0][0]), {**states[0][1], "ranks": [rank_meta for _, rank_meta in states[1:]]}
    for rank, (rank_tensors, _) in enumerate(states[1:], 1):
        tensors |= {_OF_RANK.format(rank) + name: value for name, value in rank_tensors.items()}
    return tensors, meta


def restore(tensors: dict[str, torch.Tensor], meta: dict, rank: int, processes: int) -> None:
    """This process's stream as the checkpoint kept it. Saved by as many processes, each takes its own; saved by
    another number (or before checkpoints kept every process's), the first takes the first's and the others
    leave it for streams of their own."""
    ranks = meta.get("ranks", [])
    prefix = _OF_RANK.format(rank)
    if rank > 0 and len(ranks) == processes - 1:
        mine = {name.removeprefix(prefix): value for name, value in tensors.items() if name.startswith(prefix)}
        _restore(mine, ranks[rank - 1])
        return
    _restore({name: value for name, value in tensors.items() if "/" not in name}, meta)
    own_stream(rank)

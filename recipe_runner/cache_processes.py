"""`recipe cache` across the processes a launcher starts: each encodes its share of the shards on its own GPU.

The teacher forward is the whole cost of a cache (T5-XXL over every prompt), and shards are independent files,
so N processes take shards i with i % N == rank and finish in about 1/N of the time. Without a launcher this is
one process and no collective is ever made.
"""

from __future__ import annotations

import torch

from components.devices import resolve_device
from recipe_runner.processes import launched_processes
from schemas.hardware import Hardware


class CacheProcesses:
    """This process's rank, the process count, its device, and the two collectives the cache needs."""

    def __init__(self, hardware: Hardware) -> None:
        device = resolve_device(hardware)
        self.state = None
        if launched_processes() > 1:
            from accelerate import PartialState

            self.state = PartialState(cpu=device.type == "cpu")
            device = self.state.device
        self.device = device
        self.rank = 0 if self.state is None else self.state.process_index
        self.world = 1 if self.state is None else self.state.num_processes

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def owns(self, shard: int) -> bool:
        return shard % self.world == self.rank

    def wait_for_everyone(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def total(self, *counts: float) -> list[float]:
        """Each count summed over every process."""
        if self.state is None:
            return list(counts)
        from accelerate.utils import reduce

        summed = reduce(torch.tensor(counts, dtype=torch.float64, device=self.device), "sum")
        return summed.tolist()

    def close(self) -> None:
        """After the last collective, on success: a process group left to interpreter shutdown can abort the
        process ("terminate called without an active exception"), which the launcher reports as a failure."""
        if self.state is not None:
            self.state.wait_for_everyone()
            self.state.destroy_process_group()

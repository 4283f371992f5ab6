"""Decisions that every process of a multi-process run must take at the same step.

Under DDP each process runs the loop on its own data, so what it sees differs: a signal may reach one process
(a scheduler that signals only the launcher's first child) or reach each after a different step, one process's
loss may turn NaN a step before the others' (the NaN reaches their weights through the next gradient
all-reduce), and their clocks differ. A process that saves, stops or raises alone leaves the others waiting in
a collective that never completes. So these flags are combined (true when any process says so) in one
collective, at steps every process knows to be decision steps, where the loop syncs anyway; a stop signal is
also relayed at every step (StopRelay), so that one between decision steps is acted on within a step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")


class Consensus:
    """`agree` returns, for each named flag, whether any process has it set; one gather for all of them."""

    def __init__(self, accelerator) -> None:
        self.accelerator = accelerator

    @property
    def alone(self) -> bool:
        return self.accelerator.num_processes == 1

    def agree(self, **flags: bool | torch.Tensor) -> dict[str, bool]:
        """Call from every process at the same step (one host sync; none of the flags' values leaves a device
        before it)."""
        if self.alone:
            return {name: bool(value) for name, value in flags.items()}
        device = self.accelerator.device
        local = torch.stack([torch.as_tensor(value, device=device).reshape(()).float() for value in flags.values()])
        seen = self.accelerator.gather(local.unsqueeze(0)).amax(dim=0)
        return dict(zip(flags, (seen > 0).tolist(), strict=True))


class StoppableEvaluation:
    """An evaluation that every process leaves together, at once, when a stop reaches any of them.

    A long evaluation (27-44 s for 12,000 prompts) can outlast a scheduler's grace period. A single process checks
    its flag before each batch. Several processes agree every `every` batches, counting `rounds` positions (the
    longest share) so that a process with a shorter share still joins each agreement; a last agreement after the
    final batch catches a stop that came meanwhile. Either way `stopped` is then the same in every process.
    """

    def __init__(self, consensus: Consensus, stop, rounds: int, every: int = 16) -> None:
        self.consensus, self.stop, self.rounds, self.every = consensus, stop, rounds, every
        self.stopped = False

    def _agreed(self) -> bool:
        self.stopped = self.consensus.agree(stop=self.stop.raised)["stop"]
        return self.stopped

    def batches(self, share: Iterable[T]) -> Iterator[T]:
        """`share` (this process's batches, at most `rounds` of them) until the processes agree to stop."""
        mine = iter(share)
        for index in range(self.rounds):
            if (self.consensus.alone or index % self.every == 0) and self._agreed():
                return
            batch = next(mine, None)
            if batch is not None:
                yield batch
        self._agreed()


class StopRelay:
    """Tells every process of a launch, one step later, that a stop reached any of them.

    Between decision steps the processes would otherwise learn of a scheduler's SIGTERM only at the next logging
    step, which can be minutes away: past the grace period, so the run was killed unsaved. Each step starts a
    non-blocking reduction of the flag on a CPU (gloo) group and reads the previous step's: no device sync, and a
    wait only while another process's host has not yet reached that step; every process reads the same answer at
    the same step."""

    def __init__(self, accelerator) -> None:
        self.group = None
        self.pending: tuple[object, torch.Tensor] | None = None
        if accelerator.num_processes > 1:
            import torch.distributed as dist

            self.group = dist.new_group(backend="gloo")

    def heard(self, raised: bool) -> bool:
        """Whether any process had its stop raised a step ago; call from every process at every step."""
        if self.group is None:
            return raised
        import torch.distributed as dist

        heard = self._read()
        flag = torch.tensor([int(raised)], dtype=torch.int32)
        self.pending = (dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group, async_op=True), flag)
        return heard

    def settle(self) -> None:
        """Complete the reduction in flight, before the process groups are taken down."""
        self._read()

    def _read(self) -> bool:
        if self.pending is None:
            return False
        work, flag = self.pending
        self.pending = None
        work.wait()
        return bool(flag.item())

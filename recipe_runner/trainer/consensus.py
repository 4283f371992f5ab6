"""Decisions that every process of a multi-process run must take at the same step.

Under DDP each process runs the loop on its own data, so what it sees differs: a signal may reach one process
(a scheduler that signals only the launcher's first child) or reach each after a different step, one process's
loss may turn NaN a step before the others' (the NaN reaches their weights through the next gradient
all-reduce), and their clocks differ. A process that saves, stops or raises alone leaves the others waiting in
a collective that never completes. So these flags are combined (true when any process says so) in one
collective, at steps every process knows to be decision steps, where the loop syncs anyway.
"""

from __future__ import annotations

import torch


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

"""Checkpoints by the clock as well as by the step count.

`save_every_steps` suits a run whose step time is known; when steps are slow (long prompts, a small GPU, a
bigger student) a thousand steps can be hours, and a crash that no handler sees (SIGKILL by the OOM killer, a
driver fault, a lost spot instance) loses all of them. The clock bounds that loss in minutes.
"""

from __future__ import annotations

import time

import torch


class SaveClock:
    """Says when `minutes` have passed since the last step checkpoint; every process gets the same answer."""

    def __init__(self, minutes: float | None, accelerator) -> None:
        self.seconds = None if minutes is None else minutes * 60
        self.accelerator = accelerator
        self.restart()

    def restart(self) -> None:
        self.last = time.monotonic()

    def due(self) -> bool:
        """Ask only where the processes already synchronise (the logging steps): across processes the answer is
        the main process's, broadcast, since their clocks differ and all of them must save together."""
        if self.seconds is None:
            return False
        due = time.monotonic() - self.last >= self.seconds
        if self.accelerator.num_processes == 1:
            return due
        from accelerate.utils import broadcast

        flag = torch.tensor([int(due)], device=self.accelerator.device)
        return bool(broadcast(flag, from_process=0).item())

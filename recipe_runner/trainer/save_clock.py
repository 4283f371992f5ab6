"""Checkpoints by the clock as well as by the step count.

`save_every_steps` suits a run whose step time is known; when steps are slow (long prompts, a small GPU, a
bigger student) a thousand steps can be hours, and a crash that no handler sees (SIGKILL by the OOM killer, a
driver fault, a lost spot instance) loses all of them. The clock bounds that loss in minutes.
"""

from __future__ import annotations

import time


class SaveClock:
    """Says when `minutes` have passed since the last step checkpoint, by this process's clock: a single process
    asks after every step; several ask at logging steps and save when any one's clock is due (see consensus.py)."""

    def __init__(self, minutes: float | None) -> None:
        self.seconds = None if minutes is None else minutes * 60
        self.restart()

    def restart(self) -> None:
        self.last = time.monotonic()

    def due(self) -> bool:
        return self.seconds is not None and time.monotonic() - self.last >= self.seconds

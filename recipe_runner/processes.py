"""How many processes a launcher (torchrun) started, read where no Accelerator exists yet (the CLI, setup)."""

from __future__ import annotations

import os


def launched_processes() -> int:
    """WORLD_SIZE as torchrun sets it; 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def first_process() -> bool:
    """Whether this is the process of its launch (RANK 0, or the only one) that holds the run's locks, tidies and
    speaks for all; known before the Accelerator exists."""
    return os.environ.get("RANK", "0") == "0"

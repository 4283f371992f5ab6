"""How many processes a launcher (torchrun) started, read where no Accelerator exists yet (the CLI, setup)."""

from __future__ import annotations

import os


def launched_processes() -> int:
    """WORLD_SIZE as torchrun sets it; 1 without a launcher."""
    return int(os.environ.get("WORLD_SIZE", "1"))

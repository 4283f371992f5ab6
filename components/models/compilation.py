"""torch.compile for batches whose sequence length changes every step.

Regional compilation (accelerate's `compile_regions`): each repeated transformer block is compiled once and the
compiled code is reused by every layer, so a 28-layer student compiles in the time of one layer; dynamic shapes
keep a new sequence length from triggering a recompile. Parameters stay shared with the original module, so
checkpoints and exports read the uncompiled module as before.
"""

from __future__ import annotations

from accelerate.utils import compile_regions
from torch import nn


def compile_for_varied_lengths(module: nn.Module) -> nn.Module:
    return compile_regions(module, dynamic=True)

"""Which scaled-dot-product attention kernels run: flash and memory-efficient, never cuDNN's.

cuDNN's SDPA kernel builds and caches an execution plan per input shape. Length-bucketed batches and single
prompts change the sequence length at almost every call, so on an H100 the plan building cost 2-3 ms of CPU per
attention call and left the GPU idle most of a training step (`recipe bench`: 564 ms/step with it, see README).
Flash and memory-efficient attention need no per-shape plan.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPE_STABLE_BACKENDS = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)


@contextmanager
def shape_stable_attention() -> Iterator[None]:
    """Usable as a decorator too; nested use is harmless (the outer choice is restored on exit)."""
    with sdpa_kernel(list(SHAPE_STABLE_BACKENDS)):
        yield

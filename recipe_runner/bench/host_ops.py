"""Operations one training step dispatches, counted the same way on any device.

On a GPU a step of a deep student on short prompts is bound by the host: every aten operation is a kernel
launch (or a few) whose host cost does not shrink with its size, so with ~2,000 real tokens a step the GPU sat
idle most of it (README, Benchmarks). The count needs no GPU: a CPU run shows how a setting moves it (fp32
masters add a cast per weight, gradient checkpointing a second forward, token batches more tokens per
operation). Views are left out: they launch nothing.
"""

from __future__ import annotations

from collections import Counter

from torch.utils._python_dispatch import TorchDispatchMode

from recipe_runner.bench.timing import PHASES


class OpCounter(TorchDispatchMode):
    """Counts non-view aten operations by phase while active (backward included: autograd runs it with the
    dispatch mode of the thread that called backward). `enter(phase)`: the operations from now on are that phase's."""

    def __init__(self) -> None:
        super().__init__()
        self.phase = PHASES[0]
        self.counts: Counter[str] = Counter()

    def enter(self, phase: str) -> None:
        self.phase = phase

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.counts[self.phase] += 1
        return func(*args, **(kwargs or {}))

    def per_phase(self) -> dict[str, int]:
        return {phase: self.counts[phase] for phase in PHASES}

"""Honest clocks and memory probes: CUDA work is asynchronous, so every reading waits for the device first."""

from __future__ import annotations

import platform
import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def now(device: torch.device) -> float:
    """perf_counter after all queued device work has finished."""
    synchronize(device)
    return time.perf_counter()


PHASES = (
    "batch",
    "student",
    "bolt_on",
    "teacher",
    "loss",
    "loss_backward",
    "bolt_on_backward",
    "student_backward",
    "update",
)
"""Parts of a training step, in the order a step runs them: the batch's copy to the device; the forwards of the
student, the bolt-on (with the unpacking of packed outputs), the teacher (none with a cache) and the losses; the
backward through the losses, the bolt-on and the student (its recomputed forward included); the update
(clipping, optimizer step, zeroing)."""


class PhaseClock:
    """Wall time of each phase of a step, every boundary a device synchronisation: the phases' sum is slower than
    a step left to run asynchronously, but each phase's share is its own work. `enter(phase)` ends the phase
    running (summing repeats, e.g. over micro-batches) and starts `phase`; `stop()` ends the last one."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self._phase: str | None = None
        self._since = 0.0

    def enter(self, phase: str | None) -> None:
        moment = now(self.device)
        if self._phase is not None:
            self.seconds[self._phase] += moment - self._since
        self._phase, self._since = phase, moment

    def stop(self) -> dict[str, float]:
        self.enter(None)
        return self.seconds


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def _max_rss_bytes() -> int:
    """Process high-water resident set size; Linux reports KiB, macOS bytes."""
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value if sys.platform == "darwin" else value * 1024


class PeakMemory:
    """Peak memory over a measured region: CUDA allocator peak on a GPU, max-RSS growth on a CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._rss_start = 0

    @property
    def method(self) -> str:
        if self.device.type == "cuda":
            return "torch.cuda.max_memory_allocated (tensors incl. weights and optimizer state; no allocator cache)"
        return (
            "CPU: growth of the process max RSS (getrusage) over the warm-up and timed steps; a lower bound, since "
            "memory freed by earlier phases is reused without raising the high-water mark (null: no growth seen)"
        )

    def start(self) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._rss_start = _max_rss_bytes()

    def peak_bytes(self) -> int | None:
        """None where nothing could be seen: a CPU's high-water mark that an earlier phase had set higher."""
        if self.device.type == "cuda":
            synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        return (_max_rss_bytes() - self._rss_start) or None

    @staticmethod
    def process_max_rss_bytes() -> int:
        return _max_rss_bytes()


PROFILE_HEADER = "# recipe bench --profile: the kernels of the timed training steps that cost most"


@contextmanager
def profiled(path: str | None, device: torch.device) -> Iterator[None]:
    """Profile the enclosed region and write the kernels that cost most to `path` (nothing when None)."""
    if path is None:
        yield
        return
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profiler:
        yield
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = profiler.key_averages().table(sort_by=key, row_limit=60)
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # checked writable before the bench, made only now
    Path(path).write_text(f"{PROFILE_HEADER}\n{table}", encoding="utf-8")

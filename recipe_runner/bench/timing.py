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
            "CPU: growth of the process max RSS (getrusage) during the timed steps; a lower bound, since memory "
            "freed by earlier phases is reused without raising the high-water mark"
        )

    def start(self) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self._rss_start = _max_rss_bytes()

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            synchronize(self.device)
            return int(torch.cuda.max_memory_allocated(self.device))
        return _max_rss_bytes() - self._rss_start

    @staticmethod
    def process_max_rss_bytes() -> int:
        return _max_rss_bytes()


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
    Path(path).write_text(profiler.key_averages().table(sort_by=key, row_limit=60), encoding="utf-8")

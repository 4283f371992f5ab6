"""What loader worker processes need from the machine, checked before a run depends on them.

A worker hands each batch's tensors to the main process as file descriptors, passed over a Unix socket that it
binds in the temporary folder. Where that cannot be bound (a TMPDIR path too long for a socket address, as on
some clusters, or a temporary folder that is read-only), the worker's queue thread drops the batch with a
traceback and the main process waits for it forever. Checked here, that is one line before any model loads.

The tensors themselves go through shared memory (/dev/shm), which a container keeps at 64 MB unless told
otherwise: a batch that does not fit there is dropped by the same queue thread ("No space left on device").
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import socket
import tempfile
from multiprocessing.connection import arbitrary_address
from pathlib import Path

from components.errors import UserFacingError
from recipe_runner.memory import DTYPE_BYTES
from schemas import Recipe

# How long the main process waits for one batch from its workers before it stops the run (with a checkpoint of
# the steps done): far above any batch of tokenizing and reading a cache, and finite, so that a batch lost by a
# worker ends the run with a message rather than leaves it waiting through the night.
LOADER_TIMEOUT_S = 600


class LoaderWorkersError(UserFacingError):
    """Loader worker processes could not pass batches back on this machine."""


def worker_socket_problem() -> str | None:
    """Why a loader worker could not pass a batch back on this machine, in words; None when it can. Binds a
    socket where a worker's would go (a name in multiprocessing's own folder under TMPDIR) and removes it."""
    probe, address = socket.socket(socket.AF_UNIX), ""
    try:
        address = arbitrary_address("AF_UNIX")  # makes multiprocessing's folder, which it removes at exit
        probe.bind(address)
    except OSError as exc:
        size = len(os.fsencode(address))
        length = f": a socket path there has {size} bytes, Linux takes at most 107" if size > 107 else ""
        return (
            f"loader workers (hardware.num_workers) pass batches back through a Unix socket in the temporary "
            f"folder {tempfile.gettempdir()}, and none can be made there ({exc.strerror or exc}{length}): set TMPDIR "
            "to a short writable folder, for example `TMPDIR=/tmp recipe run ...`, or set hardware.num_workers: 0"
        )
    finally:
        probe.close()
        with contextlib.suppress(OSError):
            if address:
                os.unlink(address)
    return None


def require_worker_sockets(num_workers: int) -> None:
    """Raise LoaderWorkersError when `num_workers` processes could not pass batches back; nothing for none."""
    if num_workers > 0:
        problem = worker_socket_problem()
        if problem is not None:
            raise LoaderWorkersError(problem)


SHARED_MEMORY = Path("/dev/shm")
PREFETCH_FACTOR = 2  # batches each worker makes ahead (torch's default, set in batch_loader)
_INDEX_BYTES_PER_TOKEN = 64  # token ids, masks and alignment indices of a batch, generously


def batches_in_flight(num_workers: int) -> int:
    """Batches that exist at once with `num_workers` workers: each one's prefetched, and the one being handed over."""
    return PREFETCH_FACTOR * num_workers + 1


def loader_batch_bytes(recipe: Recipe, teacher_width: int) -> int:
    """The most bytes one batch passes from a worker: its cached teacher rows at their longest, and its indices."""
    hardware, cache = recipe.hardware, recipe.teacher_cache
    tokens = hardware.batch_token_bound(max(recipe.student.max_length, recipe.teacher.max_length))
    targets = 0
    if cache is not None:
        targets = hardware.batch_token_bound(recipe.teacher.max_length) * teacher_width * DTYPE_BYTES[cache.dtype]
    return tokens * _INDEX_BYTES_PER_TOKEN + targets


def shared_memory_shortfall(
    recipe: Recipe, teacher_width: int, batches: int, folder: Path = SHARED_MEMORY
) -> str | None:
    """Why `batches` of the recipe's largest loader batches would not fit in the free shared memory, where workers
    hand them over (a container's /dev/shm is 64 MB unless raised); None when they fit or workers are off.
    Past it the first large batch is lost in its worker, after the models have loaded, and the run stops when the
    loader times out."""
    workers = recipe.hardware.num_workers
    if workers == 0 or not folder.is_dir():
        return None
    one = loader_batch_bytes(recipe, teacher_width)
    free = shutil.disk_usage(folder).free
    if batches * one <= free:
        return None
    in_flight = batches_in_flight(workers)
    mib = 2**20
    return (
        f"loader workers hand batches over in shared memory ({folder}), which has {free / mib:,.1f} MiB free; one "
        f"batch of this recipe takes up to {one / mib:,.1f} MiB (hardware.batch_size or batch_tokens at the longest "
        f"prompts, with the cached teacher rows) and {workers} workers hold up to {in_flight} at once. Give the "
        f"container more shared memory (`docker run --shm-size={math.ceil(in_flight * one / 2**30)}g` "
        "or `--ipc=host`), lower hardware.batch_size or batch_tokens, or set hardware.num_workers: 0"
    )


def usable_cores() -> int:
    """CPU cores this process may run on (a scheduler's or container's limit, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def more_workers_than_cores(num_workers: int, processes: int, cores: int) -> str | None:
    """Said once per run in place of torch's warning (printed again by each loader a run makes): loader workers
    beyond the cores compete with training for them; None when they fit."""
    total = num_workers * processes
    if total <= cores:
        return None
    each = f" in each of {processes} processes" if processes > 1 else ""
    fits = max(0, cores // processes - 1)
    return (
        f"note: hardware.num_workers is {num_workers}{each}, but this run may use {cores} CPU core(s): the loader "
        f"workers and training compete for them, which slows both; {fits} leaves a core to training"
    )

"""What loader worker processes need from the machine, checked before a run depends on them.

A worker hands each batch's tensors to the main process as file descriptors, passed over a Unix socket that it
binds in the temporary folder. Where that cannot be bound (a TMPDIR path too long for a socket address, as on
some clusters, or a temporary folder that is read-only), the worker's queue thread drops the batch with a
traceback and the main process waits for it forever. Checked here, that is one line before any model loads.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
from multiprocessing.connection import arbitrary_address

from components.errors import UserFacingError

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

"""Sections that a loader worker's death must not cut in two.

torch's DataLoader learns that a worker died from a SIGCHLD handler that raises in the main thread, wherever it
happens to be. Raised between the optimizer's update of one parameter group and the next, or in the middle of a
checkpoint, it would leave weights, position and files out of step. Inside these sections the handler only notes
the signal; it runs, and raises, once the section is complete.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def child_signals_deferred() -> Iterator[None]:
    """Defer the Python-level SIGCHLD handler, if any, to the end of the block (only the main thread can)."""
    original = signal.getsignal(signal.SIGCHLD)
    if not callable(original):  # no loader workers, or another thread: nothing would raise here
        yield
        return
    pending: list[tuple[int, object]] = []
    signal.signal(signal.SIGCHLD, lambda signum, frame: pending.append((signum, frame)))
    try:
        yield
    finally:
        signal.signal(signal.SIGCHLD, original)
    if pending:
        original(*pending[0])

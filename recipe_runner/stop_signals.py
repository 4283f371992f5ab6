"""The signals that mean "stop": what every verb treats as an interrupt, and the trainer as "checkpoint, then stop".

Kept free of heavy imports: the command line installs them before it knows which verb runs.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator


def stop_signals() -> list[int]:
    """Ctrl-C, a scheduler's SIGTERM, and the hangup an ssh session that drops sends to a process in its terminal
    (unless it was started under nohup, which ignores it: that choice stays)."""
    signals = [signal.SIGINT, signal.SIGTERM]
    hangup = getattr(signal, "SIGHUP", None)
    if hangup is not None and signal.getsignal(hangup) is not signal.SIG_IGN:
        signals.append(hangup)
    return signals


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def stops_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP end a verb the way Ctrl-C does, by KeyboardInterrupt, so that the cleanup of temporary
    files runs; by default they end the process on the spot and leave them behind."""
    previous = {}
    for sig in stop_signals()[1:]:
        with contextlib.suppress(ValueError):  # not the main thread: leave the signals as they are
            previous[sig] = signal.signal(sig, _interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)

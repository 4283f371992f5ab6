"""A loader worker's death, reported by a SIGCHLD handler that raises, waits for the end of a critical section."""

from __future__ import annotations

import os
import signal

import pytest

from recipe_runner.trainer.deferred_signals import child_signals_deferred


class _WorkerDied(RuntimeError):
    pass


@pytest.fixture
def raising_child_handler():
    def handler(signum, frame):
        raise _WorkerDied("DataLoader worker (pid 1) is killed by signal: Killed.")

    previous = signal.signal(signal.SIGCHLD, handler)
    yield handler
    signal.signal(signal.SIGCHLD, previous)


def test_the_handler_runs_after_the_section_not_inside_it(raising_child_handler):
    done = []
    with pytest.raises(_WorkerDied), child_signals_deferred():
        os.kill(os.getpid(), signal.SIGCHLD)
        done.extend(range(1000))  # bytecodes at which an undeferred handler would have raised
        done.append("end")
    assert done[-1] == "end"
    assert signal.getsignal(signal.SIGCHLD) is raising_child_handler


def test_without_a_signal_the_section_leaves_the_handler_as_it_was(raising_child_handler):
    with child_signals_deferred():
        pass
    assert signal.getsignal(signal.SIGCHLD) is raising_child_handler
    with pytest.raises(_WorkerDied):  # and it still raises afterwards
        os.kill(os.getpid(), signal.SIGCHLD)
        sum(range(1000))


def test_an_error_inside_the_section_is_not_replaced_by_the_deferred_one(raising_child_handler):
    with pytest.raises(KeyError), child_signals_deferred():
        os.kill(os.getpid(), signal.SIGCHLD)
        raise KeyError("first")
    assert signal.getsignal(signal.SIGCHLD) is raising_child_handler


def test_with_the_default_disposition_nothing_changes():
    # A DataLoader with workers earlier in this process (a bench test) leaves torch's handler installed.
    previous = signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    try:
        with child_signals_deferred():
            os.kill(os.getpid(), signal.SIGCHLD)
        assert signal.getsignal(signal.SIGCHLD) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGCHLD, previous)

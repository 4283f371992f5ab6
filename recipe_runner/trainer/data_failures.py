"""Failures of the data pipeline, told apart from failures of the step (bugs, to be shown in full): the run
stops on them with a checkpoint of the steps it finished."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TypeVar

import torch

from recipe_runner.trainer.stops import what_failed

Item = TypeVar("Item")

_WORKER_DIED = "DataLoader worker (pid"  # how torch words a loader worker's death, raised from its SIGCHLD handler


class DataFailure(Exception):
    """A batch could not be read or prepared; `reason` is one line naming the cause."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def next_batch(stream: Iterator[Item]) -> Item:
    """The next item of the batch stream; a loader worker's error or a cache shard that went missing is raised as
    a DataFailure (running out of device memory stays what it is)."""
    try:
        return next(stream)
    except torch.OutOfMemoryError:
        raise
    except Exception as exc:
        raise DataFailure(what_failed(exc)) from None


def worker_death(exc: RuntimeError) -> DataFailure | None:
    """torch reports a worker's death from its SIGCHLD handler, wherever the main thread happens to be."""
    return DataFailure(what_failed(exc)) if str(exc).startswith(_WORKER_DIED) else None

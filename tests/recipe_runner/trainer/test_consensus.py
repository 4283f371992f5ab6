"""Flags every process must decide alike: true when any process has them (the two-process runs are in
test_training_end_to_end.py)."""

from __future__ import annotations

import multiprocessing
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from recipe_runner.trainer.consensus import Consensus, StoppableEvaluation, StopRelay


def _with_other_process(other: list[float]) -> SimpleNamespace:
    """An accelerator of two processes whose other process holds `other`."""

    def gather(local: torch.Tensor) -> torch.Tensor:
        return torch.cat([local, torch.tensor([other])])

    return SimpleNamespace(num_processes=2, device=torch.device("cpu"), gather=gather)


def test_a_flag_set_by_any_process_is_set_for_all():
    consensus = Consensus(_with_other_process([0.0, 1.0, 0.0]))
    agreed = consensus.agree(nonfinite=torch.tensor(True), stop=False, clock=False)
    assert agreed == {"nonfinite": True, "stop": True, "clock": False}
    assert not consensus.alone


def test_one_process_decides_alone_without_a_collective():
    def no_gather(_):
        raise AssertionError("a single process needs no collective")

    consensus = Consensus(SimpleNamespace(num_processes=1, device=torch.device("cpu"), gather=no_gather))
    assert consensus.agree(nonfinite=torch.tensor(False), stop=True) == {"nonfinite": False, "stop": True}


class _Flag:
    """A StopFlag stand-in that a test raises when a chosen batch is reached."""

    def __init__(self) -> None:
        self.raised = False


def _lone() -> Consensus:
    return Consensus(SimpleNamespace(num_processes=1, device=torch.device("cpu"), gather=None))


def test_a_single_process_leaves_before_the_next_batch_and_catches_a_stop_after_the_last():
    flag = _Flag()
    evaluation = StoppableEvaluation(_lone(), flag, rounds=5)
    seen = []
    for batch in evaluation.batches(range(5)):
        seen.append(batch)
        flag.raised = batch == 1
    assert seen == [0, 1] and evaluation.stopped
    finished = StoppableEvaluation(_lone(), flag := _Flag(), rounds=3)
    assert list(finished.batches(range(3))) == [0, 1, 2] and not finished.stopped
    late = StoppableEvaluation(_lone(), flag, rounds=3)
    for batch in late.batches(range(3)):
        flag.raised = batch == 2  # during the last batch: the result is not logged
    assert late.stopped


class _GlooAccelerator:
    num_processes = 2
    device = torch.device("cpu")

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        parts = [torch.empty_like(local) for _ in range(2)]
        dist.all_gather(parts, local)
        return torch.cat(parts)


def _evaluate_share(rank: int, address: str, stop_at: int | None, results) -> None:
    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=2)
    try:
        flag = _Flag()
        evaluation = StoppableEvaluation(Consensus(_GlooAccelerator()), flag, rounds=5, every=2)
        share = range(5) if rank == 0 else range(4)  # uneven shares, as eval_order[rank::2] gives them
        seen = []
        for batch in evaluation.batches(share):
            seen.append(batch)
            if rank == 1 and batch == stop_at:
                flag.raised = True
        dist.barrier()  # both reached the end: neither waits in an agreement the other never joins
        results.put((rank, seen, evaluation.stopped))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(("stop_at", "expected"), [(2, ([0, 1, 2, 3], [0, 1, 2, 3], True)), (None, None)])
def test_two_processes_with_uneven_shares_leave_together(tmp_path, stop_at, expected):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    address = f"file://{tmp_path / 'rendezvous'}"
    workers = [context.Process(target=_evaluate_share, args=(r, address, stop_at, results)) for r in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0, "a process was left waiting in an agreement"
    got = dict((rank, (seen, stopped)) for rank, seen, stopped in (results.get(timeout=5) for _ in workers))
    if expected is None:  # no stop: each evaluates its whole share
        assert got == {0: ([0, 1, 2, 3, 4], False), 1: ([0, 1, 2, 3], False)}
    else:  # the stop on process 1 during batch 2 is agreed at position 4, by both
        assert got == {0: (expected[0], expected[2]), 1: (expected[1], expected[2])}


def _relay_steps(rank: int, address: str, results) -> None:
    dist.init_process_group("gloo", init_method=address, rank=rank, world_size=2)
    try:
        relay = StopRelay(SimpleNamespace(num_processes=2))
        heard = [relay.heard(rank == 1 and step >= 3) for step in range(6)]  # a signal reaches process 1 at step 3
        relay.settle()
        results.put((rank, heard))
    finally:
        dist.destroy_process_group()


def test_a_stop_on_one_process_is_heard_by_both_at_the_same_next_step(tmp_path):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    address = f"file://{tmp_path / 'rendezvous'}"
    workers = [context.Process(target=_relay_steps, args=(r, address, results)) for r in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    got = dict(results.get(timeout=5) for _ in workers)
    assert got[0] == got[1] == [False, False, False, False, True, True]
    assert StopRelay(SimpleNamespace(num_processes=1)).heard(True)  # one process: at once, no group

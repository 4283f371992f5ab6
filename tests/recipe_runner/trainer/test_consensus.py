"""Flags every process must decide alike: true when any process has them (the two-process runs are in
test_training_end_to_end.py)."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from recipe_runner.trainer.consensus import Consensus


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

"""Errors as the command line says them: once for a launch of several processes when every process has the same."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from recipe_runner.cli_support import reports_recipe_errors
from recipe_runner.trainer.parts import RunSetupError
from recipe_runner.trainer.stops import TrainingOutOfMemory


def _command(error: Exception) -> click.Command:
    @click.command()
    @reports_recipe_errors
    def failing() -> None:
        raise error

    return failing


@pytest.mark.parametrize("rank", ["0", "1"])
def test_an_error_every_process_meets_alike_is_said_by_the_first_alone(rank, monkeypatch):
    monkeypatch.setenv("RANK", rank)
    result = CliRunner().invoke(_command(RunSetupError("hardware.distributed is none")), [])
    assert result.exit_code == 1
    assert ("error: hardware.distributed is none" in result.output) == (rank == "0")


def test_an_error_of_one_process_is_said_by_it(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    result = CliRunner().invoke(_command(TrainingOutOfMemory("batch 3 did not fit")), [])
    assert result.exit_code == 1 and "error: batch 3 did not fit" in result.output


def test_sampling_that_diverged_in_one_process_is_said_by_it(monkeypatch, tmp_path):
    """Each process draws its own on-policy coin: a NaN in sampling is met by the processes that sampled alone,
    while a NaN loss is agreed by all."""
    from recipe_runner.trainer.stops import diverged

    monkeypatch.setenv("RANK", "1")
    sampling = diverged(tmp_path, 3, 1, "recipe run r.yaml --resume", "the student's sampling probabilities")
    result = CliRunner().invoke(_command(sampling), [])
    assert result.exit_code == 1 and "error: the student's sampling probabilities became NaN" in result.output
    agreed = CliRunner().invoke(_command(diverged(tmp_path, 3, 1, "recipe run r.yaml --resume")), [])
    assert agreed.exit_code == 1 and agreed.output == ""

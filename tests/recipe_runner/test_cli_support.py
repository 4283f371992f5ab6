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

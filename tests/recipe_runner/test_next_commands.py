"""The command lines that messages offer are the ones that started the run, quoted so that a shell reads them back."""

from __future__ import annotations

import shlex

import pytest

from recipe_runner.next_commands import FROM_PYTHON, NextCommands


def test_a_resume_repeats_every_set_value_in_order_quoted_for_the_shell():
    commands = NextCommands("my recipes/t5.yaml", ("output.dir=runs/a b", "stages.0.trainable=[bolt_on]"))
    line = commands.resume
    sets = "--set 'output.dir=runs/a b' --set 'stages.0.trainable=[bolt_on]'"
    assert line == f"recipe run 'my recipes/t5.yaml' {sets} --resume"
    assert shlex.split(line)[2:] == [
        "my recipes/t5.yaml", "--set", "output.dir=runs/a b", "--set", "stages.0.trainable=[bolt_on]", "--resume"
    ]  # fmt: skip


def test_the_remote_code_permission_is_repeated_for_every_verb():
    commands = NextCommands("r.yaml", ("output.dir=x",), allow_remote_code=True)
    assert commands.command("cache") == "recipe cache r.yaml --set output.dir=x --trust-remote-code"
    assert commands.resume.endswith("--trust-remote-code --resume")


def test_a_run_of_several_processes_is_resumed_under_the_same_launcher(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    commands = NextCommands.of_this_process("r.yaml", ("hardware.distributed=ddp",), False)
    expected = "torchrun --standalone --nproc_per_node 4 -m recipe_runner.cli run r.yaml --set hardware.distributed=ddp"
    assert commands.resume == f"{expected} --resume"
    # The cache and the export need no launcher: one process writes them.
    assert commands.command("export") == "recipe export r.yaml --set hardware.distributed=ddp"


def test_several_nodes_are_told_to_keep_their_rendezvous(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "16")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    line = NextCommands.of_this_process("r.yaml", (), False).resume
    assert line.startswith("torchrun --nnodes 2 --nproc_per_node 8 (and the rendezvous options")
    assert line.endswith("-m recipe_runner.cli run r.yaml --resume")


def test_one_process_and_no_launcher_variables_is_plain_recipe(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert NextCommands.of_this_process("r.yaml", (), False).resume == "recipe run r.yaml --resume"


def test_a_run_started_from_python_names_the_recipe_as_a_placeholder():
    assert FROM_PYTHON.resume == "recipe run RECIPE --resume"


def test_a_refused_resume_under_a_launcher_offers_the_same_launcher(monkeypatch, tmp_path):
    """Offered without it, a two-process run went on in one process, with half the prompts per step."""
    from recipe_runner.trainer.resume import ResumeMismatchError, ResumeReport, check_resumable

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    launcher = NextCommands.of_this_process("r.yaml", (), False).launcher
    report = ResumeReport(blocking=["hardware.seed 0 -> 1"])
    with pytest.raises(ResumeMismatchError) as refused:
        check_resumable(tmp_path / "run" / "checkpoints" / "step-00000004", report, launcher)
    offered = str(refused.value).split("Resume with the recipe it was trained with, `")[1].split("`")[0]
    assert offered.startswith("torchrun --standalone --nproc_per_node 2 -m recipe_runner.cli run ")
    assert offered.endswith(f"resolved_recipe.yaml --set output.dir={tmp_path / 'run'} --resume")

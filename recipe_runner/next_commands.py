"""The command lines a message tells a person to run next, rebuilt from the one that started this process.

A stop message that said `recipe run RECIPE --resume` left out the run's `--set` values: followed as written it
continued another run, or exported one that had finished long before, from the same recipe file."""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass

from recipe_runner.processes import launched_processes

PLACEHOLDER = "RECIPE"  # for a Trainer built in Python, where no command line exists to repeat


@dataclass(frozen=True)
class NextCommands:
    """The recipe file as it was given, its `--set` values in order, the remote-code permission, and how many
    processes (per node, nodes) launched the run: a resumed run must be launched as the stopped one was."""

    file: str = PLACEHOLDER
    overrides: tuple[str, ...] = ()
    allow_remote_code: bool = False
    processes_per_node: int = 1
    nodes: int = 1

    @classmethod
    def of_this_process(cls, file: str, overrides: tuple[str, ...], allow_remote_code: bool) -> NextCommands:
        """Reads the launch from the variables torchrun (and `accelerate launch`) set for each process."""
        world = launched_processes()
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
        return cls(file, tuple(overrides), allow_remote_code, per_node, max(1, world // max(1, per_node)))

    def command(self, verb: str, *flags: str) -> str:
        """`recipe VERB FILE --set ... FLAGS`, quoted for a POSIX shell. Only `run` is launched as this run was:
        `cache` and `export` need no launcher (`cache` may still be given one to share its work)."""
        words = [verb, self.file]
        for override in self.overrides:
            words += ["--set", override]
        if self.allow_remote_code:
            words.append("--trust-remote-code")
        return f"{self._launcher() if verb == 'run' else 'recipe'} {shlex.join([*words, *flags])}"

    @property
    def resume(self) -> str:
        return self.command("run", "--resume")

    @property
    def launcher(self) -> str:
        """What starts a run as this one was started: `recipe`, or torchrun with its process count."""
        return self._launcher()

    def _launcher(self) -> str:
        if self.processes_per_node * self.nodes == 1:
            return "recipe"
        if self.nodes == 1:
            return f"torchrun --standalone --nproc_per_node {self.processes_per_node} -m recipe_runner.cli"
        return (
            f"torchrun --nnodes {self.nodes} --nproc_per_node {self.processes_per_node} (and the rendezvous "
            "options this run was launched with, on every node) -m recipe_runner.cli"
        )


# What a run started from Python (not from the command line) offers: the recipe stands as RECIPE.
FROM_PYTHON = NextCommands()

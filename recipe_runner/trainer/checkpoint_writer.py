"""How a run writes its checkpoints: on the main process, whole or not at all, pruned to `keep_last`, summed in
the background, with every process waiting for the write."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from tqdm.auto import tqdm

from components.atomic_files import ForeignDirectoryError
from components.errors import some_of
from recipe_runner.trainer.checkpoint import (
    COMPLETE,
    Position,
    added_to_checkpoint,
    checkpoint_name,
    prune,
    save_checkpoint,
)
from recipe_runner.trainer.checksums import BackgroundChecksums
from recipe_runner.trainer.deferred_signals import child_signals_deferred
from recipe_runner.trainer.random_streams import process_state
from recipe_runner.trainer.stops import write_failed


class CheckpointWriter:
    """Saves step checkpoints (and `best`) under `root`; `record` is what each stores about the run, `resume` the
    command line that continues it after a failed write."""

    def __init__(self, accelerator: Accelerator, root: Path, keep_last: int, record: dict, resume: str) -> None:
        self.accelerator, self.root, self.keep_last, self.record = accelerator, root, keep_last, record
        self.then = f"then continue with `{resume}`"
        self.sums = BackgroundChecksums()
        self.kept: set[Path] = set()  # step folders pruning keeps for their added files, said once each

    def save(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler,
        position: Position,
        name: str | None = None,
    ) -> bool:
        """Whether the checkpoint was written (on every process alike): a `best` holding a person's files is not
        replaced, and training goes on."""
        random_states = gather_object([process_state()])  # every process's, in process order (waits for all)
        written = True
        if self.accelerator.is_main_process:
            self.wait()  # `best` is replaced and old checkpoints pruned: never while they are being hashed
            target = self.root / (name or checkpoint_name(position.global_step))
            try:
                with child_signals_deferred():
                    save_checkpoint(
                        target, model, optimizer, scheduler, position, self.record, self.then, random_states
                    )
            except ForeignDirectoryError:
                if name is None:  # a step folder (checked before training; made since): nothing to go on from
                    raise
                tqdm.write(f"warning: {_not_replaced(target, position)}", file=sys.stderr)
                target, written = None, False
            except OSError as exc:
                raise write_failed(self.root, target, exc, self.then, self.keep_last) from None
            if name is None:
                self._say_kept(prune(self.root, self.keep_last))
            if target is not None:
                self.sums.start(target)
        self.accelerator.wait_for_everyone()
        return broadcast_object_list([written], from_process=0)[0]

    def _say_kept(self, kept: list[Path]) -> None:
        for path in kept:
            if path not in self.kept:
                self.kept.add(path)
                theirs = some_of(added_to_checkpoint(path), 4)
                tqdm.write(f"note: {path} holds {theirs}, which no run wrote: kept, not pruned", file=sys.stderr)

    def wait(self) -> None:
        """Until the newest checkpoint's sums are written (or found unwritable, which is said)."""
        for failed in self.sums.wait():
            tqdm.write(f"warning: could not write the checksums of {failed}; it loads unchecked", file=sys.stderr)


def _not_replaced(target: Path, position: Position) -> str:
    """Why the weights of a better evaluation were not kept in `target`, mid-run: what to move, and that the run
    goes on (a resume command would only meet this run's own lock)."""
    theirs = added_to_checkpoint(target) if (target / COMPLETE).is_file() else []
    held = (
        f"holds {some_of(theirs, 4)}, which no run wrote"
        if theirs
        else "is not a checkpoint (a folder or file of yours?)"
    )
    score = f" (eval/loss {position.best_eval:.4g})" if position.best_eval is not None else ""
    return (
        f"{target} {held}, so the weights of step {position.global_step}{score} were not kept there: move "
        f"{'those files out of it' if theirs else 'it away'}; training goes on, and keeps the next better "
        "evaluation there"
    )

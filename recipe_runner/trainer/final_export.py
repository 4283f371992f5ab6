"""The export a run writes when its last stage ends: where, and what it never replaces."""

from __future__ import annotations

import sys
from pathlib import Path

from torch import nn
from tqdm.auto import tqdm

from recipe_runner.commands.missing_export import kept_export_note
from recipe_runner.next_commands import NextCommands
from recipe_runner.trainer.stops import TrainingInterrupted, last_checkpoint, write_failed
from schemas import Recipe


def export_at_end(recipe: Recipe, model: nn.Module, tokenizer, commands: NextCommands) -> Path | None:
    """`<output.dir>/export` from the final weights; None where an export a person wrote from a checkpoint they
    chose (`recipe export --checkpoint`) is there, which is kept and said."""
    from components.export import export_trained, exported_from

    out = Path(recipe.output.dir)
    target, checkpoints = out / "export", out / "checkpoints"
    chosen = exported_from(target)
    if chosen is not None:
        tqdm.write(kept_export_note(target, chosen, commands), file=sys.stderr)
        return None
    try:
        return export_trained(target, recipe, model, tokenizer)
    except OSError as exc:
        then = f"then `{commands.command('export')}` writes it"
        raise write_failed(checkpoints, target, exc, then, recipe.output.keep_last) from None
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM or a hangup: training is done and saved, the export is not
        raise TrainingInterrupted(
            f"interrupted while writing the export, after training finished "
            f"({last_checkpoint(checkpoints, 'the last checkpoint')}); nothing was left half-written: "
            f"`{commands.resume}` (or `{commands.command('export')}`) writes the export"
        ) from None

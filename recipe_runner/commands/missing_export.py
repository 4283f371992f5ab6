"""What writes the export that `recipe infer` looks for at a recipe's output.dir, as this command's own lines:
a user told to "run `recipe run RECIPE`" re-typed the file and lost the --set values that chose the run."""

from __future__ import annotations

from pathlib import Path

from recipe_runner.next_commands import NextCommands


def no_export_yet(out_dir: Path, commands: NextCommands) -> str:
    """The run's state decides: checkpoints are exported, a run stopped before its first one is resumed, and a
    recipe never run is trained."""
    from recipe_runner.trainer.checkpoint import step_checkpoints

    export_dir = out_dir / "export"
    if step_checkpoints(out_dir / "checkpoints"):
        return (
            f"no export in {export_dir} yet: write it from the run's last checkpoint with "
            f"`{commands.command('export')}` (a run still training writes it when it ends)"
        )
    if (out_dir / "metrics.jsonl").is_file():
        stopped = "the run there stopped before its first checkpoint"
        return f"no export in {export_dir}: {stopped}; `{commands.resume}` trains it"
    return f"no export in {export_dir}: train the recipe first with `{commands.command('run')}`"


def training_checkpoint(directory: Path, commands: NextCommands) -> str:
    """--checkpoint named a training checkpoint where an export was wanted."""
    export = commands.command("export", "--checkpoint", str(directory), "--out", "DIR")
    return f"{directory} is a training checkpoint, not an export: write one with `{export}`, then pass --checkpoint DIR"


def kept_export_note(export_dir: Path, checkpoint: str, commands: NextCommands) -> str:
    """A run that ends beside an export a person wrote from a checkpoint they chose (`best`, an earlier step)
    keeps it: replaced by the run's final weights, it would be gone with nothing said."""
    return (
        f"note: kept {export_dir}, the export of {checkpoint} written by `recipe export`, rather than replace it "
        f"with the run's final weights: `{commands.command('export')}` writes those there (replacing it), or "
        "add `--out DIR` to write them elsewhere"
    )

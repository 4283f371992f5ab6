"""`recipe run`: train every stage, checkpointing as it goes, then export the distilled encoder."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from recipe_runner.cli_support import (
    interrupt_goes_on,
    overrides_option,
    reports_recipe_errors,
    trust_remote_code_option,
)


@click.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@overrides_option
@trust_remote_code_option
@click.option("--resume", is_flag=True, help="Continue from the last complete checkpoint in output.dir.")
@click.option("--no-progress", is_flag=True, help="No progress bar (metrics still go to metrics.jsonl).")
@reports_recipe_errors
def run(file: str, overrides: tuple[str, ...], allow_remote_code: bool, resume: bool, no_progress: bool) -> None:
    """Train the recipe's stages in order and export the encoder (or, for a causal-LM recipe, the student)."""
    from components.export import check_target
    from recipe_runner.loader import load_recipe
    from recipe_runner.next_commands import NextCommands
    from recipe_runner.processes import first_process
    from recipe_runner.recipe_warnings import as_warning, recipe_warnings
    from recipe_runner.trainer.loop import Trainer
    from recipe_runner.trainer.stops import TrainingInterrupted

    loaded = load_recipe(file, overrides, allow_remote_code=allow_remote_code)
    if first_process():
        for warning in recipe_warnings(loaded):
            click.echo(as_warning(warning), err=True)
    if loaded.recipe.output.export:  # refused now, not after training: only an earlier export may be replaced
        check_target(Path(loaded.recipe.output.dir) / "export", loaded.recipe.family, loaded.recipe.recipe)
    commands = NextCommands.of_this_process(file, overrides, allow_remote_code)  # what its messages offer to run
    answers = getattr(loaded.recipe.teacher, "answers", None)
    kept = "; the teacher answers written so far are kept" if answers is not None else ""
    # While models load, or the teacher writes its answers (which may take hours).
    with interrupt_goes_on(
        f" before the first training step{kept}", commands.command("run", *(["--resume"] if resume else []))
    ):
        trainer = Trainer(loaded.recipe, resume=resume, progress=not no_progress, commands=commands)
    speaks = trainer.accelerator.is_main_process  # every process of a multi-process run gets here: one says it
    try:
        summary = trainer.run()
    except TrainingInterrupted as exc:
        if speaks:
            click.echo(str(exc), err=True)
        trainer.close()  # every process stopped at the same step (consensus), so all of them get here
        sys.exit(130)
    trainer.close()
    if not speaks:
        return
    shown = ", ".join(f"{k}={v:.4f}" for k, v in summary.metrics.items())
    click.echo(f"finished at step {summary.global_step}" + (f". {shown}" if shown else ""))
    if summary.export_dir is not None:
        from recipe_runner.commands.export import export_in_words

        what = export_in_words(trainer.recipe)
        click.echo(f"exported {what}: {summary.export_dir}")

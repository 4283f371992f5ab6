"""`recipe export`: write a run's distilled encoder (or causal LM) from a checkpoint, as `recipe run` does."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from components.errors import UserFacingError
from recipe_runner.cli_support import (
    NEITHER_DATA_NOR_CACHE,
    overrides_option,
    reports_recipe_errors,
    trust_remote_code_option,
)
from recipe_runner.next_commands import FROM_PYTHON, NextCommands

if TYPE_CHECKING:
    from schemas import Recipe


class ExportSetupError(UserFacingError, RuntimeError):
    """No usable checkpoint, or one that does not fit the recipe; the message says what to do."""


def _is_complete(directory: Path) -> bool:
    from recipe_runner.trainer.checkpoint import COMPLETE

    return (directory / COMPLETE).is_file() and (directory / "model.safetensors").is_file()


def find_checkpoint(out_dir: Path, commands: NextCommands = FROM_PYTHON) -> Path:
    """The newest complete step checkpoint: the state `recipe run` exports at its end, so both give one encoder.
    `best` (kept per stage by eval loss) is exported when asked for with --checkpoint, and when it is newer than
    every step checkpoint: a run killed between writing `best` and its step checkpoint has its end there alone,
    and `recipe run --resume` exports it too. When there is none, the message offers this export's own command
    lines (`commands`) for the run that writes one."""
    from recipe_runner.trainer.checkpoint import step_checkpoints
    from recipe_runner.trainer.run_dir import saved_step

    root = out_dir / "checkpoints"
    found = [p for p in step_checkpoints(root) if _is_complete(p)]
    best = _hidden_by_a_swap(root / "best")
    if found and _is_complete(best) and (saved_step(best) or 0) > (saved_step(found[-1]) or 0):
        return best
    if found:
        return found[-1]
    if _is_complete(best):
        raise ExportSetupError(f"no step checkpoint in {root}; {best} is whole: pass --checkpoint {best}")
    if (out_dir / "metrics.jsonl").is_file():  # a plain `recipe run` would refuse to replace that log
        train = f"the run there stopped before its first one; `{commands.resume}` trains it again from step 0"
    else:
        train = f"train one first with `{commands.command('run')}`"
    raise ExportSetupError(
        f"no step checkpoint in {root}: {train} (checkpoints are written every output.save_every_steps and at the "
        "end of each stage), or pass --checkpoint DIR"
    )


def _hidden_by_a_swap(checkpoint: Path) -> Path:
    """`checkpoint`, or its complete earlier copy when a run was killed between the two renames that replace it
    (read where it is: putting it back is for `recipe run`, which holds the run's lock)."""
    from components.atomic_files import hidden_by_a_swap
    from recipe_runner.trainer.checkpoint import COMPLETE

    old = hidden_by_a_swap(checkpoint, COMPLETE)
    if old is None:
        return checkpoint
    click.echo(f"{checkpoint} is missing, a run was killed while replacing it: reading {old}", err=True)
    return old


def load_checkpointed_model(recipe, checkpoint: Path):
    """The recipe's student + bolt-on with the checkpoint's weights, LoRA adapters merged; returns (model, stage)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    from recipe_runner.trainer.checkpoint import COMPLETE, read_position
    from recipe_runner.trainer.checksums import ChecksumMismatch, unchecked_note, verify_checksums
    from recipe_runner.trainer.parts import build_trained_model
    from recipe_runner.trainer.stage_setup import enter_stage, leave_stage
    from recipe_runner.trainer.stops import what_failed

    try:
        stage_index = read_position(checkpoint).stage
    except (OSError, ValueError, TypeError) as exc:
        raise ExportSetupError(f"{checkpoint / COMPLETE}: unreadable training state: {exc}") from None
    if not 0 <= stage_index < len(recipe.stages):
        raise ExportSetupError(
            f"{checkpoint} was saved in stage {stage_index}, but the recipe has {len(recipe.stages)} stage(s): "
            "is this checkpoint from another recipe?"
        )
    # The trainer's own construction, without the teacher's weights: every value is overwritten by the checkpoint.
    model = build_trained_model(recipe, "cpu")
    stage = recipe.stages[stage_index]
    # A checkpoint written during a LoRA stage holds the peft-wrapped student: wrap the same way, load, merge.
    enter_stage(model, stage, recipe.hardware.trained_weights)
    try:
        if not verify_checksums(checkpoint):
            click.echo(unchecked_note(checkpoint), err=True)
        load_model(model, str(checkpoint / "model.safetensors"), strict=True, device="cpu")
    except RuntimeError as exc:
        raise ExportSetupError(
            f"{checkpoint / 'model.safetensors'} does not fit the recipe's trained model "
            f"(stage {stage_index} {stage.name!r}): {_why_not(checkpoint, recipe, stage_index, exc)}"
        ) from None
    except (ChecksumMismatch, SafetensorError, OSError) as exc:
        raise ExportSetupError(
            f"{checkpoint} is damaged ({what_failed(exc)}): export another checkpoint with --checkpoint DIR "
            f"(those kept: {', '.join(p.name for p in _kept(checkpoint)) or 'none'})"
        ) from None
    leave_stage(model, stage)
    model.requires_grad_(False)
    return model.eval(), stage_index


def _kept(checkpoint: Path) -> list[Path]:
    """The other whole checkpoints beside this one (step checkpoints and `best`)."""
    from recipe_runner.trainer.checkpoint import step_checkpoints

    best = checkpoint.parent / "best"
    others = [*step_checkpoints(checkpoint.parent), *([best] if _is_complete(best) else [])]
    return [p for p in others if p.resolve() != checkpoint.resolve()]


def _why_not(checkpoint: Path, recipe: Recipe, stage_index: int, exc: RuntimeError) -> str:
    """The recipe values that changed since the checkpoint was saved and reshape its weights; else torch's first
    mismatch (the line after its bare 'Error(s) in loading state_dict' heading)."""
    from recipe_runner.trainer import resume
    from recipe_runner.trainer.checkpoint import read_record

    try:
        record = read_record(checkpoint)
    except (OSError, ValueError):
        record = None
    if record is not None:
        report = resume.compare(record, recipe, record.get("train_prompts_sha256", ""), stage_index)
        changed = resume.architecture_changes(report)
        if changed:
            return (
                f"changed since it was saved: {resume.listed(changed)}. Export it with the recipe it was trained "
                f"with: `{resume.with_its_recipe(checkpoint, 'export', '--checkpoint', str(checkpoint))}`"
            )
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return " ".join(lines[:2])[:300]


@click.command("export")
@click.argument("file", type=click.Path(dir_okay=False))
@overrides_option
@trust_remote_code_option
@click.option(
    "--checkpoint",
    "checkpoint_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Checkpoint directory (default: the newest step checkpoint, the final state `recipe run` exports; "
    "<output.dir>/checkpoints/best for the best eval loss of the last stage).",
)
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Export directory (default: <output.dir>/export), outside any run's checkpoints folder; an earlier export "
    "there is replaced, anything else refused.",
)
@reports_recipe_errors
def export(
    file: str, overrides: tuple[str, ...], allow_remote_code: bool, checkpoint_dir: str | None, out_dir: str | None
) -> None:
    """Write the distilled encoder (student, tokenizer, bolt-on, encoder.json), or for a logits recipe the
    student as a transformers model folder, from a training checkpoint."""
    from components.export import check_target
    from recipe_runner.loader import load_recipe

    recipe = load_recipe(file, overrides, allow_remote_code=allow_remote_code, unread=NEITHER_DATA_NOR_CACHE).recipe
    run_dir = Path(recipe.output.dir)
    target = Path(out_dir) if out_dir is not None else run_dir / "export"
    # before loading anything: only an earlier export of this recipe may be replaced, never in a checkpoints folder
    _refuse_among_checkpoints(target, run_dir)
    _refuse_another_runs_export(target, run_dir)
    check_target(target, recipe.family, recipe.recipe)
    lock = _lock_the_run(run_dir) if target.absolute().parent == run_dir.absolute() else None
    try:
        commands = NextCommands.of_this_process(file, overrides, allow_remote_code)
        _export(recipe, run_dir, target, checkpoint_dir, commands)
    finally:
        if lock is not None:
            lock.release()


def _refuse_among_checkpoints(target: Path, run_dir: Path) -> None:
    """A run's checkpoints folder holds only what `recipe run` writes there: an export in it reads as a checkpoint
    cut short, which stops the resume that would reach its step, and pruning or a swap of `best` may remove it."""
    folders = [target.absolute(), *target.absolute().parents]
    ours = (run_dir / "checkpoints").absolute()
    inside = next((f for f in folders[1:] if f == ours or (f.name == "checkpoints" and _holds_a_run(f))), None)
    if inside is not None or folders[0] == ours:
        where = f"is in {inside}" if inside is not None else "is the checkpoints folder"
        raise ExportSetupError(
            f"--out {target} {where}, where `recipe run` writes, resumes from and prunes checkpoints: "
            f"choose another --out (the default is {run_dir / 'export'})"
        )


def _refuse_another_runs_export(target: Path, run_dir: Path) -> None:
    """`<another run>/export` is where that run keeps its own result (infer and its resume read it there): an
    export of this run's checkpoint, of the same recipe, would replace it without a trace."""
    folder = target.absolute().parent
    if target.name == "export" and folder != run_dir.absolute() and (folder / "resolved_recipe.yaml").is_file():
        raise ExportSetupError(
            f"--out {target} is the export of the run in {folder}, not of this one ({run_dir}): writing there would "
            "replace that run's result; choose another --out"
        )


def _holds_a_run(checkpoints: Path) -> bool:
    """Whether a folder named `checkpoints` is a run's: its parent holds the recipe the run resolved."""
    return (checkpoints.parent / "resolved_recipe.yaml").is_file()


def _lock_the_run(run_dir: Path):
    """The run's own lock: a live `recipe run` writes this export at its end and prunes the checkpoints read here."""
    from recipe_runner.trainer.run_dir import DirectoryLock

    if not run_dir.is_dir():
        return None
    return DirectoryLock(run_dir, remedy="export to another folder with --out DIR").acquire()


def _refuse_another_recipes(checkpoint: Path, recipe: Recipe) -> None:
    """A recipe that extends another inherits its output.dir: its name and settings must not label those weights."""
    from recipe_runner.trainer.resume import with_its_recipe
    from recipe_runner.trainer.run_dir import trained_by

    owner = trained_by(checkpoint)
    if owner not in (None, recipe.recipe):
        raise ExportSetupError(
            f"{checkpoint} was trained by recipe {owner!r}, not {recipe.recipe!r}: export it with that recipe, "
            f"`{with_its_recipe(checkpoint, 'export', '--checkpoint', str(checkpoint))}`; a recipe that extends "
            "another inherits its output.dir, so give this one its own (e.g. --set output.dir=runs/NAME)"
        )


def _refuse_another_meaning(checkpoint: Path, recipe: Recipe) -> None:
    """Weights that load but would be read another way than they were trained are refused; a student.max_length
    other than the trained one is said (reading longer or shorter prompts may be meant)."""
    from recipe_runner.trainer import resume
    from recipe_runner.trainer.checkpoint import read_position, read_record

    try:
        record, stage_index = read_record(checkpoint), read_position(checkpoint).stage
    except (OSError, ValueError):
        record = None
    if record is None:
        return
    changed = resume.meaning_changes(record, recipe, stage_index)
    if changed:
        raise ExportSetupError(
            f"{checkpoint} was trained otherwise than this recipe would export it: {resume.listed(changed)}. Export "
            f"it with the recipe it was trained with: "
            f"`{resume.with_its_recipe(checkpoint, 'export', '--checkpoint', str(checkpoint))}`"
        )
    trained = record["recipe"]["student"].get("max_length")
    if trained not in (None, recipe.student.max_length):
        click.echo(
            f"note: student.max_length is {recipe.student.max_length}, and {checkpoint} was trained at {trained}: "
            f"the export reads prompts up to {recipe.student.max_length} tokens",
            err=True,
        )


def _export(recipe: Recipe, run_dir: Path, target: Path, checkpoint_dir: str | None, commands: NextCommands) -> None:
    from components.disk_space import require_free
    from components.export import export_trained
    from components.models import load_tokenizer
    from recipe_runner.trainer.checkpoint import step_checkpoints
    from recipe_runner.trainer.disk_need import export_bytes

    if checkpoint_dir is not None:
        checkpoint = _hidden_by_a_swap(Path(checkpoint_dir))
        if not checkpoint.exists():
            raise ExportSetupError(f"--checkpoint {checkpoint}: does not exist")
        if not _is_complete(checkpoint):
            inside = [p.name for p in step_checkpoints(checkpoint / "checkpoints")] if checkpoint.is_dir() else []
            hint = f"; a run's checkpoints are in {checkpoint / 'checkpoints'} (newest {inside[-1]})" if inside else ""
            raise ExportSetupError(
                f"{checkpoint} is not a complete checkpoint (needs model.safetensors and trainer_state.json){hint}"
            )
    else:
        checkpoint = find_checkpoint(run_dir, commands)
    _refuse_another_recipes(checkpoint, recipe)
    _refuse_another_meaning(checkpoint, recipe)
    model, stage_index = load_checkpointed_model(recipe, checkpoint)
    # An earlier export at the target stays until the new one is complete, so the whole export must fit.
    require_free(
        target,
        export_bytes(model),
        "the export writes the student's and bolt-on's weights with its tokenizer and config",
        "free space, or write it to another disk with --out DIR",
    )
    tokenizer = load_tokenizer(recipe.student)
    try:
        written = export_trained(target, recipe, model, tokenizer, str(checkpoint.resolve()))
    except OSError as exc:
        raise ExportSetupError(
            f"could not write the export to {target}: {exc.strerror or exc}; nothing was left half-written (an "
            "earlier export there is kept): free space, or write it to another disk with --out DIR"
        ) from None
    click.echo(
        f"exported {export_in_words(recipe)}: {written} (from {checkpoint}, stage {stage_index} "
        f"{recipe.stages[stage_index].name!r})"
    )


def export_in_words(recipe) -> str:
    """What the export folder holds, as `run` and `export` name it."""
    if recipe.family != "logits":
        return "encoder"
    bidirectional = getattr(recipe.student, "bidirectional", False)
    return f"{'bidirectional encoder' if bidirectional else 'causal LM'} (a transformers model folder)"

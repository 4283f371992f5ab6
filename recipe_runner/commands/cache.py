"""`recipe cache`: run the teacher once over the data and keep its outputs on disk."""

from __future__ import annotations

from pathlib import Path

import click

from recipe_runner.cli_support import (
    interrupt_goes_on,
    overrides_option,
    reports_recipe_errors,
    trust_remote_code_option,
)


@click.command("cache")
@click.argument("file", type=click.Path(dir_okay=False))
@overrides_option
@trust_remote_code_option
@click.option(
    "--batch-tokens",
    type=click.IntRange(min=1),
    default=None,
    help="Padded tokens per teacher forward (default: teacher.cache.batch_tokens).",
)
@click.option(
    "--verify",
    is_flag=True,
    help="Also read every finished shard and check its values against the SHA-256 taken when it was written; "
    "a damaged one is encoded again. (Teacher answers are read whole and checked line by line on every call.)",
)
@click.option(
    "--reuse-from",
    type=click.Path(file_okay=False),
    default=None,
    help="An earlier teacher.cache.dir (or one split of it), or teacher.answers.dir, made with the same teacher "
    "settings: the outputs (answers) of prompts it already holds are copied from it, and only new or changed prompts "
    "go through the teacher. It is only read; the recipe's directory must be another one.",
)
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@reports_recipe_errors
def cache(
    file: str,
    overrides: tuple[str, ...],
    allow_remote_code: bool,
    batch_tokens: int | None,
    verify: bool,
    reuse_from: str | None,
    no_progress: bool,
) -> None:
    """Encode train and eval prompts with the teacher into teacher.cache.dir (resumes if interrupted); for a
    logits recipe with teacher.answers, write the teacher's answers into teacher.answers.dir instead."""
    from recipe_runner.cache_processes import CacheProcesses
    from recipe_runner.family_checks import require_embedding_family
    from recipe_runner.loader import load_recipe
    from recipe_runner.next_commands import NextCommands
    from recipe_runner.teacher_cache import build_teacher_cache

    loaded = load_recipe(file, overrides, allow_remote_code=allow_remote_code)
    recipe = loaded.recipe
    commands = NextCommands.of_this_process(file, overrides, allow_remote_code)
    if recipe.family == "logits" and recipe.teacher.answers is not None:
        rerun = commands.command("cache", *(["--reuse-from", reuse_from] if reuse_from else []))
        with interrupt_goes_on(": the answers written so far are kept", rerun):
            _write_answers(recipe, not no_progress, commands, Path(reuse_from) if reuse_from else None)
        return
    why = (
        "its teacher runs beside the student in `recipe run`, on each batch; there is nothing to cache (with "
        "teacher.answers, this writes the teacher's answers)"
    )
    require_embedding_family(recipe, "cache", why)
    processes = CacheProcesses(loaded.recipe.hardware)  # several under torchrun: each writes its share
    flags = [
        *(["--batch-tokens", str(batch_tokens)] if batch_tokens else []),
        *(["--verify"] if verify else []),
        *(["--reuse-from", reuse_from] if reuse_from else []),
    ]
    rerun = commands.command("cache", *flags)
    with interrupt_goes_on(": the finished shards are kept", rerun):
        reports = build_teacher_cache(
            loaded.recipe,
            batch_tokens,
            progress=not no_progress,
            processes=processes,
            verify=verify,
            commands=commands,
            reuse_from=Path(reuse_from) if reuse_from else None,
        )
    if processes.is_main:
        for passed_over in next(iter(reports.values()), {}).get("not_reused", []):
            click.echo(f"not reused: {passed_over}")
    for split, report in reports.items():
        for rewritten in report["rewritten"]:  # each process names the damaged shards it rewrote
            click.echo(f"{split}: rewrote damaged shard {rewritten}")
        if not processes.is_main:
            continue
        click.echo(_report_line(split, report, recipe.teacher_cache.shard_size, verify))
    processes.close()


def _report_line(split: str, report: dict, shard_size: int, verified: bool) -> str:
    """What this call wrote, or, for a cache found complete, that it was checked (and how): "0 shards written"
    read as if nothing had been cached."""
    from components.cache.shards import shard_count
    from components.disk_space import size_in_words

    on_disk = f"{size_in_words(report['bytes'])} on disk ({report['bytes_per_prompt']:.0f} bytes per prompt)"
    if report["shards_written"] == 0:
        shards = shard_count(report["count"], shard_size)
        how = "every value checked against its SHA-256" if verified else "headers and sizes checked"
        return f"{split}: {report['count']} prompts, complete: {shards} shard(s) already there ({how}), {on_disk}"
    copied = f"{report['reused']} prompts copied from the earlier cache, " if report.get("reused") else ""
    return (
        f"{split}: {report['count']} prompts, {report['shards_written']} shard(s) written, {copied}"
        f"{report['tokens']} tokens encoded, {on_disk}"
    )


def _write_answers(recipe, progress: bool, commands, reuse_from: Path | None) -> None:
    """Sequence-level distillation: the teacher answers every prompt of each split (continuing a stopped run)."""
    from components.devices import resolve_device
    from recipe_runner.teacher_answers import teacher_answers
    from recipe_runner.trainer.parts import split_prompts

    train, held_out = split_prompts(recipe)
    splits = {"train": train, **({"eval": held_out} if held_out else {})}
    answers = teacher_answers(recipe, splits, resolve_device(recipe.hardware), progress, commands, reuse_from)
    for split, written in answers.items():
        click.echo(f"{split}: {len(written)} teacher answers in {Path(recipe.teacher.answers.dir) / f'{split}.jsonl'}")

"""`recipe align-report`: how much of the student's text each alignment tier reaches on the recipe's prompts."""

from __future__ import annotations

import sys

import click

from recipe_runner.cli_support import overrides_option, reports_recipe_errors, trust_remote_code_option


@click.command("align-report")
@click.argument("file", type=click.Path(dir_okay=False))
@overrides_option
@trust_remote_code_option
@click.option(
    "--split",
    type=click.Choice(["train", "eval"]),
    default="train",
    show_default=True,
    help="Which prompts to align (eval: data.eval, or the held-out data.eval_fraction of train).",
)
@reports_recipe_errors
def align_report(file: str, overrides: tuple[str, ...], allow_remote_code: bool, split: str) -> None:
    """Print per-tier token coverage of the recipe's alignment between student and teacher tokenizers."""
    from components.alignment.report import coverage_report, format_report
    from components.models import load_tokenizer
    from components.models.downloads import needed_from, require_downloaded
    from recipe_runner.family_checks import NotForThisFamily
    from recipe_runner.loader import load_recipe
    from recipe_runner.trainer.parts import split_prompts

    recipe = load_recipe(file, overrides, allow_remote_code=allow_remote_code, unread=frozenset({"cache"})).recipe
    if recipe.alignment is None:  # a logits recipe across two vocabularies has one; its uld pairs are `matched`
        raise NotForThisFamily(
            f"recipe {recipe.recipe!r} has no alignment: teacher and student read the same token ids, so every "
            "token pairs (`recipe align-report` is for recipes with `alignment`)"
        )
    train, held_out = split_prompts(recipe)
    prompts = train if split == "train" else held_out
    if not prompts:
        click.echo(
            f"error: the {split} split has no prompts: give held-out prompts in data.eval, or set data.eval_fraction",
            err=True,
        )
        sys.exit(1)
    needs = [
        *needed_from("student", recipe.student, weights=False),
        *needed_from("teacher", recipe.teacher, weights=False),
    ]
    require_downloaded(needs, "align-report")
    prompts, measured = _with_answers(recipe, split, prompts, file, overrides, allow_remote_code)
    student_tokenizer = load_tokenizer(recipe.student)
    teacher_tokenizer = load_tokenizer(recipe.teacher)
    report = coverage_report(
        prompts,
        student_tokenizer,
        teacher_tokenizer,
        recipe.alignment,
        recipe.student.max_length,
        recipe.teacher.max_length,
    )
    click.echo(f"{split} split of {recipe.recipe}{measured}")
    click.echo(format_report(report))
    if recipe.family == "logits":  # across two vocabularies: what the divergences over shared tokens can compare
        from components.losses.vocab_map import build_vocab_map

        shared = build_vocab_map(student_tokenizer, teacher_tokenizer)
        click.echo(f"vocabularies: {shared.summary()} (forward_kl, reverse_kl and jsd compare these, uld all)")


def _with_answers(recipe, split: str, prompts: list[str], file: str, overrides, allow_remote_code: bool):
    """A recipe trained on the teacher's answers aligns prompt and answer, and its uld loss compares the answer's
    tokens alone: measure those texts once written, joined as training joins them.
    Returns the texts and how the report's title names them."""
    from pathlib import Path

    from components.data.answer_texts import joined
    from components.data.teacher_answers import read_answers
    from recipe_runner.next_commands import NextCommands
    from recipe_runner.teacher_answers import answers_identity

    spec = getattr(recipe.teacher, "answers", None)
    if spec is None:
        return prompts, ""
    written = read_answers(Path(spec.dir), split, prompts, answers_identity(recipe))
    if written is None:
        write = NextCommands.of_this_process(file, overrides, allow_remote_code).command("cache")
        click.echo(
            f"note: the teacher's answers for {split} are not written yet (`{write}` writes them): this measures the "
            "prompts alone, while training aligns each prompt with its answer",
            err=True,
        )
        return prompts, " (prompts alone)"
    texts = [joined(prompt, answer)[0] for prompt, answer in zip(prompts, written, strict=True)]  # as training joins
    return texts, " (prompts with the teacher's answers)"

"""`teacher.answers`: the teacher answers every prompt of each split once (sequence-level distillation), before
training or with `recipe cache`; a later run reads the answers back, a stopped one continues them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm.auto import tqdm

from components.cache.manifest import teacher_source_identity
from components.data.prompts import prompt_key
from components.data.teacher_answers import read_answers, reusable_answers, write_answers
from components.errors import UserFacingError
from recipe_runner.next_commands import FROM_PYTHON, NextCommands
from recipe_runner.processes import first_process, launched_processes
from recipe_runner.trainer.run_dir import DirectoryLock
from schemas import Recipe

if TYPE_CHECKING:
    from recipe_runner.errors import Problem
    from recipe_runner.loader import LoadedRecipe

ANSWERS_LOCK = ".recipe-answers.lock"


class AnswersSetupError(UserFacingError, RuntimeError):
    """Answers that are missing where they cannot be written now; the message says how to write them."""

    alike_in_every_process = True  # every process of a launch reads the same answers directory


def answers_identity(recipe: Recipe) -> dict:
    """What the answers depend on besides the prompts: the teacher and how it was asked (not how many prompts
    at once: a batch size lowered after running out of memory keeps what was written; nor, for greedy answers,
    the seed, so a sweep over the student's seed reuses them)."""
    spec = recipe.teacher.answers
    assert spec is not None
    settings = {
        "max_new_tokens": spec.max_new_tokens,
        "temperature": spec.temperature,
        "prompt_tokens": recipe.teacher.max_length,  # each prompt is cut there before the teacher answers it
    }
    sampled = {"answer_seed": recipe.hardware.seed} if spec.temperature > 0 else {}
    # Answers written before prompts were continued without the end-of-text their tokenizer appends followed it.
    ended = {"prompts_continued_without_end_of_text": True} if _appends_end(recipe) else {}
    return {**teacher_source_identity(recipe), **settings, **sampled, **ended}


def _appends_end(recipe: Recipe) -> bool:
    from components.data.prompt_ids import writes_end
    from components.models import load_tokenizer
    from components.models.source import ModelSourceError

    try:
        return writes_end(load_tokenizer(recipe.teacher))
    except ModelSourceError:  # not here: said where the tokenizer is checked
        return False


def teacher_answers(
    recipe: Recipe,
    splits: dict[str, list[str]],
    device: torch.device,
    progress: bool = True,
    commands: NextCommands = FROM_PYTHON,
    reuse_from: Path | None = None,
) -> dict[str, list[str]]:
    """Each split's answers: read when written already, else written now with the teacher (loaded once, when a
    prompt needs it, then freed on return). Under a launcher of several processes missing answers are refused:
    `recipe cache` writes them. `reuse_from`: an earlier answers directory whose answers to the same prompts are
    taken instead of asked again."""
    from components.inference.text_generation import continue_prompts
    from components.models import build_model, freeze, load_tokenizer
    from recipe_runner.trainer.logit_parts import teacher_seed

    spec = recipe.teacher.answers
    assert spec is not None
    directory, identity = Path(spec.dir), answers_identity(recipe)
    if reuse_from is not None and reuse_from.resolve().is_relative_to(directory.resolve()):
        raise AnswersSetupError(
            f"--reuse-from {reuse_from} is teacher.answers.dir itself (or in it): answers are taken into a new "
            "directory, never rewritten in place; point teacher.answers.dir at a new directory (--set "
            "teacher.answers.dir=...)"
        )
    known, passed_over = reusable_answers(reuse_from, identity) if reuse_from is not None else ({}, [])
    reusing = ["--reuse-from", str(reuse_from)] if reuse_from is not None else []
    for words in passed_over if first_process() else ():
        print(f"not reused: {words}", file=sys.stderr)
    found = {split: read_answers(directory, split, prompts, identity) for split, prompts in splits.items()}
    missing = [split for split, answers in found.items() if answers is None]
    if not missing:
        return found  # type: ignore[return-value]
    if launched_processes() > 1:
        raise AnswersSetupError(
            f"the teacher's answers for {', '.join(missing)} are not written yet in {directory}, and a teacher "
            f"writes them in one process: run `{commands.command('cache', *reusing)}` without a launcher first, "
            "then launch the run"
        )
    tokenizer = load_tokenizer(recipe.teacher)
    lock = DirectoryLock(directory, ANSWERS_LOCK, "writing teacher answers", "point teacher.answers.dir elsewhere")
    lock.acquire()
    try:
        built: list[torch.nn.Module] = []  # the teacher once a prompt needs it: none when every answer is known

        def answer(start: int, prompts: list[str]) -> list[str]:
            seed = recipe.hardware.seed + start
            if not built:
                built.append(freeze(build_model(recipe.teacher, "teacher", device=device, seed=teacher_seed(recipe))))
            return continue_prompts(
                built[0],
                tokenizer,
                prompts,
                spec.max_new_tokens,
                spec.temperature,
                len(prompts),
                seed,
                max_length=recipe.teacher.max_length,
            )

        for split in missing:
            prompts = splits[split]
            taken = sum(prompt_key(prompt) in known for prompt in prompts)
            if taken:
                print(f"{split}: {taken} of {len(prompts)} answers taken from {reuse_from}", file=sys.stderr)
            with tqdm(
                total=len(prompts), desc=f"teacher answers ({split})", disable=not progress, file=sys.stderr
            ) as bar:
                written = _Written(bar)
                try:
                    found[split] = write_answers(
                        directory, split, prompts, identity, answer, spec.batch_size, written, known
                    )
                except OSError as exc:  # a full disk, say: the batches before it were flushed and are kept
                    raise AnswersSetupError(
                        f"could not write the teacher's answers for {split} into {directory}: "
                        f"{exc.strerror or exc}; the {written.count} answers written before it are kept: free space "
                        f"(or point teacher.answers.dir elsewhere) and rerun `{commands.command('cache')}`, which "
                        "goes on from there"
                    ) from None
    finally:
        lock.release()
    return found  # type: ignore[return-value]


def _each_split(recipe: Recipe) -> Iterator[tuple[str, list[str] | None, Exception | None]]:
    """Per split that has prompts: its written answers (None: not written yet), or the error that refuses them."""
    from components.data.teacher_answers import AnswersError
    from recipe_runner.trainer.parts import split_prompts

    spec = recipe.teacher.answers
    assert spec is not None
    train, held_out = split_prompts(recipe)
    identity = answers_identity(recipe)
    for split, prompts in (("train", train), ("eval", held_out)):
        if prompts:
            try:
                yield split, read_answers(Path(spec.dir), split, prompts, identity), None
            except AnswersError as exc:
                yield split, None, exc


def answers_problems(loaded: LoadedRecipe) -> list[Problem]:
    """Answers already written under other prompts or settings, or damaged, as `validate` says them: the run
    would refuse them only after loading its models."""
    from components.data.prompts import DataFileError

    spec = getattr(loaded.recipe.teacher, "answers", None)
    if spec is None or not Path(spec.dir).is_dir():
        return []
    try:
        refused = [exc for _, _, exc in _each_split(loaded.recipe) if exc is not None]
    except DataFileError:  # said by the data checks
        return []
    return [loaded.problem(("teacher", "answers", "dir"), str(exc)) for exc in refused]


class _Written:
    """The answers written so far, shown on a bar and counted even where the bar is off (a disabled bar counts
    nothing)."""

    def __init__(self, bar: tqdm) -> None:
        self.bar, self.count = bar, 0

    def __call__(self, count: int) -> None:
        self.bar.update(count - self.count)
        self.count = count


def unwritten_answers_note(recipe: Recipe, teacher_params: int, commands: NextCommands) -> tuple[str, bool] | None:
    """For `recipe plan`: answers not yet written, which `recipe run` writes first with the teacher on the device
    (its weights alone, against hardware.vram_gb: whether that is over budget), or answers a run would refuse.
    None when every split's answers are written, or the recipe asks for none."""
    from recipe_runner.memory import DTYPE_BYTES, GIB

    spec = getattr(recipe.teacher, "answers", None)
    if spec is None:
        return None
    directory, missing = Path(spec.dir), []
    for split, answers, refused in _each_split(recipe):
        if refused is not None:
            return f"{refused} (`recipe run` would stop on it)", True
        if answers is None:
            missing.append(split)
    if not missing:
        return None
    from recipe_runner.family_checks import teacher_in_training

    weights = teacher_params * DTYPE_BYTES[recipe.teacher.dtype] / GIB
    budget = recipe.hardware.vram_gb
    over = budget is not None and weights > budget
    held = "holds the teacher too" if teacher_in_training(recipe) else "does not hold the teacher"
    return (
        f"teacher.answers.dir {directory} holds no answers for {' and '.join(missing)} yet: `recipe run` first "
        f"loads the teacher to write them ({weights:.1f} GiB of weights, and its generation cache"
        f"{f', against hardware.vram_gb {budget:g}' if budget is not None else ''}), or "
        f"`{commands.command('cache')}` writes them beforehand; the figures above are for training, which {held}"
    ), over

"""Aligner throughput on the CPU: what one data-loader worker does per prompt (tokenise both sides, align).

Uses the recipe's tokenizers when they load offline (local files or the HF cache), else the tiny tokenizers the
repo ships, on the recipe's training prompts (else the shipped ones). The report says which.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field

from components.alignment import CrossTokenizerAligner
from components.cache.reader import CachedTeacher
from components.data.pipeline import PromptPairs
from components.data.prompts import read_prompts
from components.models import ModelSourceError, load_tokenizer
from recipe_runner.bench.lengths import REPO_DATA
from recipe_runner.bench.spec import BenchSpec
from schemas import Recipe
from schemas.base import StrictModel
from schemas.data import DataFile
from schemas.models import ModelSource

SHIPPED_TOKENIZERS = {
    "student": REPO_DATA / "tokenizers" / "tiny_qwen",
    "teacher": REPO_DATA / "tokenizers" / "tiny_t5",
}
SHIPPED_PROMPTS = REPO_DATA / "prompts" / "train.txt"


class AlignerResult(StrictModel):
    """Prompts per second of `PromptPairs.__getitem__` without a cache, in this process only."""

    tokenizers: str = Field(description="Which tokenizers ran: the recipe's, or the shipped tiny ones and why.")
    prompts_file: str
    prompts: int
    seconds: float
    prompts_per_s: float = Field(description="Per data-loader worker process; scale by hardware.num_workers.")
    student_tokens_per_prompt: float
    teacher_tokens_per_prompt: float


def bench_tokenizers(recipe: Recipe) -> tuple[object, object, str]:
    """Student and teacher tokenizers, and which ones they are (the recipe's when they load offline)."""
    try:
        student, teacher = load_tokenizer(recipe.student), load_tokenizer(recipe.teacher)
        names = [source.tokenizer or source.model for source in (recipe.student, recipe.teacher)]
        return student, teacher, f"recipe's: {names[0]}, {names[1]}"
    except ModelSourceError as exc:
        shipped = {
            role: load_tokenizer(ModelSource(config={"model_type": "t5"}, tokenizer=str(path)))
            for role, path in SHIPPED_TOKENIZERS.items()
        }
        reason = str(exc).split(":")[0]
        return shipped["student"], shipped["teacher"], f"shipped tiny_qwen / tiny_t5 (recipe's not offline: {reason})"


def bench_prompts(recipe: Recipe, count: int) -> tuple[list[str], str]:
    """`count` training prompts of the recipe (else the shipped ones), repeated as needed, and their file."""
    data = recipe.data.train
    if not Path(data.path).is_file():
        data = DataFile(path=str(SHIPPED_PROMPTS))
    prompts = read_prompts(data)
    return (prompts * (count // max(1, len(prompts)) + 1))[:count], data.path


def prompt_pairs(
    recipe: Recipe, prompts: list[str], student_tok, teacher_tok, cache: CachedTeacher | None = None
) -> PromptPairs:
    """The trainer's item pipeline for these prompts, with the recipe's aligner and lengths."""
    aligner = CrossTokenizerAligner(recipe.alignment)
    max_lengths = recipe.student.max_length, recipe.teacher.max_length
    return PromptPairs(prompts, student_tok, teacher_tok, aligner, *max_lengths, cache=cache)


def run_aligner(recipe: Recipe, spec: BenchSpec) -> AlignerResult:
    """Every prompt through the same item pipeline the trainer's data loader runs."""
    student_tok, teacher_tok, names = bench_tokenizers(recipe)
    prompts, prompts_file = bench_prompts(recipe, spec.aligner_prompts)
    pairs = prompt_pairs(recipe, prompts, student_tok, teacher_tok)
    pairs[0]  # first call builds tokenizer-side caches
    student_tokens = teacher_tokens = 0
    started = time.perf_counter()
    for index in range(len(pairs)):
        item = pairs[index]
        student_tokens += len(item["student_ids"])
        teacher_tokens += len(item["teacher_ids"])
    seconds = time.perf_counter() - started
    return AlignerResult(
        tokenizers=names,
        prompts_file=prompts_file,
        prompts=len(prompts),
        seconds=seconds,
        prompts_per_s=len(prompts) / seconds,
        student_tokens_per_prompt=student_tokens / len(prompts),
        teacher_tokens_per_prompt=teacher_tokens / len(prompts),
    )

"""Aligner throughput on the CPU: what one data-loader worker does per prompt (tokenise both sides, align).

Uses the recipe's tokenizers when they load offline (local files or the HF cache), else the tiny tokenizers the
repo ships, on the recipe's training prompts (else the shipped ones). The report says which.
"""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import Field

from components.alignment import CrossTokenizerAligner
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


def _tokenizers(recipe: Recipe) -> tuple[object, object, str]:
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


def run_aligner(recipe: Recipe, spec: BenchSpec) -> AlignerResult:
    """Every prompt through the same item pipeline the trainer's data loader runs."""
    student_tok, teacher_tok, names = _tokenizers(recipe)
    data = recipe.data.train
    if not Path(data.path).is_file():
        data = DataFile(path=str(SHIPPED_PROMPTS))
    prompts = read_prompts(data)
    prompts = (prompts * (spec.aligner_prompts // max(1, len(prompts)) + 1))[: spec.aligner_prompts]
    pairs = PromptPairs(
        prompts,
        student_tok,
        teacher_tok,
        CrossTokenizerAligner(recipe.alignment),
        recipe.student.max_length,
        recipe.teacher.max_length,
    )
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
        prompts_file=data.path,
        prompts=len(prompts),
        seconds=seconds,
        prompts_per_s=len(prompts) / seconds,
        student_tokens_per_prompt=student_tokens / len(prompts),
        teacher_tokens_per_prompt=teacher_tokens / len(prompts),
    )

"""Teacher encoding for the cache: tokens/s through the real cache writer, and bytes per prompt on disk.

`write_split` runs exactly as `recipe cache` runs it (length-sorted batches inside a shard, real tokens + 1 pad
kept, cache dtype) into a throwaway directory, so the figures include the copy to the host and the disk write.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from pydantic import Field

from components.cache.writer import DTYPES, write_split
from components.models import freeze, hidden_width
from components.teacher_outputs import encode_teacher
from recipe_runner.bench.lengths import sample_lengths
from recipe_runner.bench.models import build_random
from recipe_runner.bench.spec import BenchSpec
from recipe_runner.bench.timing import synchronize
from schemas import Recipe
from schemas.base import StrictModel

_REFERENCE_DTYPE = "bfloat16"


class TeacherResult(StrictModel):
    """Cache-writing throughput and the size of what it writes."""

    prompts: int
    batch_size: int
    cache_dtype: str
    real_tokens: int
    seconds: float
    real_tokens_per_s: float = Field(description="Includes the device->host copy and the shard writes.")
    prompts_per_s: float
    bytes_per_prompt: float = Field(description="Shard bytes on disk / prompts (safetensors header included).")
    padded_bf16_bytes_per_prompt: int = Field(description="max_length x width x 2: padding every prompt to 512.")
    ratio_vs_padded_bf16: float = Field(description="bytes_per_prompt / padded_bf16_bytes_per_prompt; target <= 0.25.")
    ratio_vs_padded_same_dtype: float = Field(description="The same, with the padded reference in the cache dtype.")


def run_teacher(recipe: Recipe, spec: BenchSpec, lengths: list[int], device: torch.device) -> TeacherResult:
    """Encode `spec.teacher_prompts` random prompts of shipped lengths into a temporary cache split."""
    hw = recipe.hardware
    teacher = freeze(build_random(recipe.teacher, "teacher", device, hw.seed, hw.attention))
    max_length = recipe.teacher.max_length
    drawn = sample_lengths(lengths, spec.teacher_prompts, recipe.hardware.seed, max_length)
    rng = np.random.default_rng(recipe.hardware.seed)
    vocab = teacher.config.vocab_size
    token_ids = [rng.integers(0, vocab, n).tolist() for n in drawn]
    cache = recipe.teacher.cache
    dtype = cache.dtype if cache is not None else _REFERENCE_DTYPE
    batch_size = recipe.hardware.batch_size
    warm = torch.randint(0, vocab, (batch_size, max(drawn)), device=device)
    encode_teacher(teacher, warm, torch.ones_like(warm, dtype=torch.bool))  # kernels picked outside the clock
    synchronize(device)
    with tempfile.TemporaryDirectory(prefix="recipe-bench-cache-") as tmp:
        report = write_split(
            Path(tmp),
            token_ids,
            teacher,
            shard_size=cache.shard_size if cache is not None else 1024,
            batch_size=batch_size,
            chroma_mask=recipe.teacher.chroma_mask,
            dtype=dtype,
            pad_id=0,
            device=device,
        )
        size = sum(file.stat().st_size for file in Path(tmp).glob("shard-*.safetensors"))
    width = hidden_width(teacher.config)
    per_prompt = size / len(drawn)
    padded_bf16 = max_length * width * DTYPES[_REFERENCE_DTYPE].itemsize
    padded_same = max_length * width * DTYPES[dtype].itemsize
    seconds = float(report["seconds"])
    return TeacherResult(
        prompts=len(drawn),
        batch_size=batch_size,
        cache_dtype=dtype,
        real_tokens=int(report["tokens"]),
        seconds=seconds,
        real_tokens_per_s=report["tokens"] / seconds,
        prompts_per_s=len(drawn) / seconds,
        bytes_per_prompt=per_prompt,
        padded_bf16_bytes_per_prompt=padded_bf16,
        ratio_vs_padded_bf16=per_prompt / padded_bf16,
        ratio_vs_padded_same_dtype=per_prompt / padded_same,
    )

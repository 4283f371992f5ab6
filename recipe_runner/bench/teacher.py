"""Teacher encoding for the cache: tokens/s through the real cache writer, and bytes per prompt on disk.

`write_split` runs exactly as `recipe cache` runs it (length-sorted batches inside a shard, real tokens + 1 pad
kept, cache dtype) into a throwaway directory, so the figures include the copy to the host and the disk write.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from pydantic import Field

from components.cache.writer import DTYPES, padded_batch, write_split
from components.data.batches import token_budget_batches
from components.models import freeze, hidden_width
from components.models.compilation import compile_for_varied_lengths, compile_wanted
from components.teacher_outputs import encode_teacher
from recipe_runner.bench.flops import FlopPart, part_flops, peak_flops
from recipe_runner.bench.lengths import sample_lengths
from recipe_runner.bench.models import attention_shape, build_random, dense_parameters
from recipe_runner.bench.spec import BenchSpec
from recipe_runner.bench.timing import device_name, now
from schemas import Recipe
from schemas.base import StrictModel
from schemas.models import TeacherCache

_REFERENCE_DTYPE = "bfloat16"


class TeacherResult(StrictModel):
    """Teacher forward speed and MFU, cache-writing throughput, and the size of what it writes."""

    prompts: int
    batch_tokens: int = Field(description="Padded tokens per teacher forward (teacher.cache.batch_tokens).")
    cache_dtype: str
    real_tokens: int
    seconds: float
    compile_warmup_s: float | None = Field(
        description="With hardware.compile: a first batch plus one untimed forward pass over the timed batches "
        "(compiling for their shapes); null without compile."
    )
    forward_real_tokens_per_s: float = Field(description="Teacher forward passes alone, same batches as the writer.")
    forward_tflops: float = Field(description="Model FLOP/s of those forward passes, real tokens only.")
    forward_peak_tflops: float | None
    forward_mfu: float | None = Field(description="forward_tflops / peak; null when the peak is unknown.")
    real_tokens_per_s: float = Field(description="Includes the device->host copy and the shard writes.")
    prompts_per_s: float
    bytes_per_prompt: float = Field(description="Shard bytes on disk / prompts (safetensors header included).")
    padded_bf16_bytes_per_prompt: int = Field(description="max_length x width x 2: padding every prompt to 512.")
    ratio_vs_padded_bf16: float = Field(description="bytes_per_prompt / padded_bf16_bytes_per_prompt; target <= 0.25.")
    ratio_vs_padded_same_dtype: float = Field(description="The same, with the padded reference in the cache dtype.")


class _ForwardTiming(NamedTuple):
    tokens: int
    flops: float
    seconds: float
    warmup_seconds: float | None


def _time_forward(
    teacher: torch.nn.Module,
    token_ids: list[list[int]],
    batch_tokens: int,
    chroma: bool,
    device: torch.device,
    compiled: bool,
) -> _ForwardTiming:
    """Length-sorted token-budget batches, as the writer forms them (here over all prompts rather than per shard),
    through the teacher alone, between two syncs; a compiled teacher first makes one untimed pass."""
    lengths = [len(ids) + int(chroma) for ids in token_ids]
    order = sorted(range(len(token_ids)), key=lengths.__getitem__)
    batches = []
    for batch in token_budget_batches(order, lengths, batch_tokens):
        ids, real = padded_batch(token_ids, batch, chroma, pad_id=0)
        batches.append((ids.to(device), real.to(device)))

    def encode_all() -> float:
        started = now(device)
        for ids, real in batches:
            encode_teacher(teacher, ids, real)
        return now(device) - started

    warmup = encode_all() if compiled else None
    seconds = encode_all()
    layers, width = attention_shape(teacher)
    dense = sum(p.numel() for p in dense_parameters(teacher))
    real_lengths = [len(ids) for ids in token_ids]
    flops = part_flops(
        FlopPart(name="teacher", role="frozen_forward", dense_params=dense, attention=layers * width), real_lengths
    )
    return _ForwardTiming(sum(real_lengths), flops, seconds, warmup)


def run_teacher(recipe: Recipe, spec: BenchSpec, lengths: list[int], device: torch.device) -> TeacherResult:
    """Encode `spec.teacher_prompts` random prompts of shipped lengths into a temporary cache split."""
    hw = recipe.hardware
    teacher = freeze(build_random(recipe.teacher, "teacher", device, hw.seed, hw.attention, hw.fused_kernels))
    compiled = compile_wanted(hw.compile, device.type)
    if compiled:
        compile_for_varied_lengths(teacher)
    max_length = recipe.teacher.max_length
    drawn = sample_lengths(lengths, spec.teacher_prompts, recipe.hardware.seed, max_length)
    rng = np.random.default_rng(recipe.hardware.seed)
    vocab = teacher.config.vocab_size
    token_ids = [rng.integers(0, vocab, n).tolist() for n in drawn]
    cache = recipe.teacher_cache
    dtype = cache.dtype if cache is not None else _REFERENCE_DTYPE
    batch_tokens = cache.batch_tokens if cache is not None else TeacherCache.model_fields["batch_tokens"].default
    longest = max(drawn) + 1
    warm = torch.randint(0, vocab, (max(1, batch_tokens // longest), longest), device=device)
    warm_started = now(device)
    encode_teacher(teacher, warm, torch.ones_like(warm, dtype=torch.bool))  # kernels picked outside the clock
    warm_seconds = now(device) - warm_started
    forward = _time_forward(teacher, token_ids, batch_tokens, recipe.teacher.chroma_mask, device, compiled)
    precision = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(teacher.dtype, "fp32")
    peak, _ = peak_flops(device_name(device), precision, spec.peak_tflops)
    with tempfile.TemporaryDirectory(prefix="recipe-bench-cache-") as tmp:
        report = write_split(
            Path(tmp),
            token_ids,
            teacher,
            shard_size=cache.shard_size if cache is not None else 1024,
            batch_tokens=batch_tokens,
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
        batch_tokens=batch_tokens,
        cache_dtype=dtype,
        real_tokens=int(report["tokens"]),
        seconds=seconds,
        compile_warmup_s=None if forward.warmup_seconds is None else warm_seconds + forward.warmup_seconds,
        forward_real_tokens_per_s=forward.tokens / forward.seconds,
        forward_tflops=forward.flops / forward.seconds / 1e12,
        forward_peak_tflops=None if peak is None else peak / 1e12,
        forward_mfu=None if peak is None else forward.flops / forward.seconds / peak,
        real_tokens_per_s=report["tokens"] / seconds,
        prompts_per_s=len(drawn) / seconds,
        bytes_per_prompt=per_prompt,
        padded_bf16_bytes_per_prompt=padded_bf16,
        ratio_vs_padded_bf16=per_prompt / padded_bf16,
        ratio_vs_padded_same_dtype=per_prompt / padded_same,
    )

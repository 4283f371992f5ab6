"""Text-encoding latency and weight memory of the two conditioning paths Chroma can use.

qwen path: student + bolt-on in the student dtype, as `DistilledEncoder.encode` runs them (right padding, bolt-on,
padding zeroed). t5 path: the teacher encoder with Chroma's mask (real tokens + one visible pad), as `encode_t5`.
One prompt per call; token ids are random with lengths drawn from the shipped distribution; tokenisation is
not included (the aligner section times tokenizers). Weight memory is also given at the recipe's real sizes,
counted on the meta device, so `--small` still reports what a full-size deployment holds.
"""

from __future__ import annotations

import statistics

import numpy as np
import torch
from pydantic import Field

from components.bolt_on import build_bolt_on
from components.inference.t5_encoding import chroma_mask
from components.models import build_model, freeze, hidden_width
from recipe_runner.bench.lengths import percentile, sample_lengths
from recipe_runner.bench.models import build_random, weight_bytes
from recipe_runner.bench.spec import BenchSpec
from recipe_runner.bench.timing import now
from schemas import Recipe
from schemas.base import StrictModel

_WARMUP_CALLS = 2


class PathLatency(StrictModel):
    """One encoding path at batch size 1."""

    path: str
    dtype: str
    prompts: int
    median_latency_ms: float
    p90_latency_ms: float
    median_prompt_tokens: float
    weight_bytes: int = Field(description="Parameters of the models benchmarked here.")
    full_size_weight_bytes: int = Field(
        description="Parameters of the recipe's real architectures, in full_size_dtype (the recipe's)."
    )
    full_size_dtype: str = Field(description="The dtype full_size_weight_bytes counts, as the recipe writes it.")


class InferenceResult(StrictModel):
    qwen: PathLatency
    t5: PathLatency


def _latencies(encode, lengths: list[int], vocab: int, device: torch.device, seed: int) -> list[float]:
    rng = np.random.default_rng(seed)
    inputs = [torch.from_numpy(rng.integers(0, vocab, (1, n))).to(device) for n in lengths]
    for ids in inputs[:_WARMUP_CALLS]:
        encode(ids)
    times = []
    for ids in inputs:
        started = now(device)
        encode(ids)
        times.append((now(device) - started) * 1000)
    return times


def _path(
    name: str, dtype: str, times: list[float], lengths: list[int], weights: int, full: tuple[int, str]
) -> PathLatency:
    return PathLatency(
        path=name,
        dtype=dtype,
        prompts=len(times),
        median_latency_ms=statistics.median(times),
        p90_latency_ms=percentile(times, 0.9),
        median_prompt_tokens=statistics.median(lengths),
        weight_bytes=weights,
        full_size_weight_bytes=full[0],
        full_size_dtype=full[1],
    )


def _full_size_bytes(original: Recipe) -> tuple[int, int]:
    """(student + bolt-on, teacher) weight bytes of the unshrunk recipe, from meta-device builds."""
    student = build_model(original.student, "student", meta=True)
    teacher = build_model(original.teacher, "teacher", meta=True)
    with torch.device("meta"):
        bolt_on = build_bolt_on(original.bolt_on, hidden_width(student.config), hidden_width(teacher.config))
    bolt_bytes = sum(p.numel() for p in bolt_on.parameters()) * getattr(torch, original.student.dtype).itemsize
    return weight_bytes(student) + bolt_bytes, weight_bytes(teacher)


def run_inference(
    recipe: Recipe, original: Recipe, spec: BenchSpec, lengths: list[int], device: torch.device
) -> InferenceResult:
    """Median single-prompt latency per path; `original` is the recipe before shrinking (for full sizes)."""
    seed = recipe.hardware.seed
    student = freeze(build_random(recipe.student, "student", device, seed))
    teacher = freeze(build_random(recipe.teacher, "teacher", device, seed))
    dtype = getattr(torch, recipe.student.dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bolt_on = build_bolt_on(recipe.bolt_on, hidden_width(student.config), hidden_width(teacher.config))
    bolt_on = freeze(bolt_on.to(device=device, dtype=dtype))
    layer = recipe.student.layer

    @torch.inference_mode()
    def qwen(ids: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(ids, dtype=torch.bool)
        out = student(input_ids=ids, attention_mask=mask.long(), output_hidden_states=layer != -1)
        hidden = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        return bolt_on(hidden, mask).float().masked_fill(~mask.unsqueeze(-1), 0.0)

    @torch.inference_mode()
    def t5(ids: torch.Tensor) -> torch.Tensor:
        padded = torch.nn.functional.pad(ids, (0, 1))  # Chroma's one visible padding token
        token_mask = torch.ones_like(padded)
        token_mask[:, -1] = 0
        embeds = teacher(input_ids=padded, attention_mask=token_mask)[0].float()
        return embeds * chroma_mask(token_mask.sum(dim=1), padded.shape[1]).unsqueeze(-1)

    full_qwen, full_t5 = _full_size_bytes(original)
    qwen_lengths = sample_lengths(lengths, spec.inference_prompts, seed, recipe.student.max_length)
    t5_lengths = sample_lengths(lengths, spec.inference_prompts, seed, recipe.teacher.max_length - 1)
    qwen_times = _latencies(qwen, qwen_lengths, student.config.vocab_size, device, seed)
    t5_times = _latencies(t5, t5_lengths, teacher.config.vocab_size, device, seed)
    return InferenceResult(
        qwen=_path(
            "student + bolt-on",
            recipe.student.dtype,
            qwen_times,
            qwen_lengths,
            weight_bytes(student) + weight_bytes(bolt_on),
            (full_qwen, original.student.dtype),
        ),
        t5=_path(
            "t5 teacher",
            recipe.teacher.dtype,
            t5_times,
            t5_lengths,
            weight_bytes(teacher),
            (full_t5, original.teacher.dtype),
        ),
    )

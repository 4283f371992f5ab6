"""`recipe bench` end to end: random-weight models of the recipe, each requested section, one typed report."""

from __future__ import annotations

import statistics
from collections.abc import Callable

import torch
import transformers

from components.attention_backends import shape_stable_attention
from components.devices import resolve_device
from recipe_runner.bench.aligner import run_aligner
from recipe_runner.bench.flops import FLOP_FORMULA
from recipe_runner.bench.inference import run_inference
from recipe_runner.bench.lengths import LENGTHS_FILE, load_lengths, percentile
from recipe_runner.bench.loader import run_loader
from recipe_runner.bench.models import SMALL_MAX_LAYERS, SMALL_MAX_VOCAB, random_weights_recipe
from recipe_runner.bench.report import BenchReport, Environment, LengthSummary
from recipe_runner.bench.spec import BenchSpec
from recipe_runner.bench.teacher import run_teacher
from recipe_runner.bench.timing import device_name
from recipe_runner.bench.training import run_training
from schemas import Recipe

UNITS = {
    "*_s (time)": "seconds",
    "*_per_s": "items per second (tokens, prompts)",
    "*_ms": "milliseconds",
    "*_bytes, bytes_per_prompt": "bytes",
    "*_tflops": "1e12 FLOP per second",
    "model_flops_per_step": "FLOP",
    "mfu, padding_fraction, ratio_*": "fraction (0..1)",
    "*_tokens": "tokens",
}


def _float32_on_cpu(recipe: Recipe, spec: BenchSpec, device: torch.device) -> tuple[Recipe, str | None]:
    """A --small run on a CPU computes in float32: CPUs without bf16 matmul units emulate bfloat16 many times more
    slowly (3-7x on an AVX2 machine), and --small promises a check of the bench in seconds, not figures of the
    recipe's precision. The cache dtype stays: it is storage, and sizes the cache as written."""
    hardware, teacher, student = recipe.hardware, recipe.teacher, recipe.student
    half = hardware.precision != "fp32" or teacher.dtype != "float32" or student.dtype != "float32"
    if not spec.small or device.type != "cpu" or not half:
        return recipe, None
    written = f"precision {hardware.precision}, teacher {teacher.dtype}, student {student.dtype}"
    if hardware.trained_weights != "fp32":  # its optimizer (and its update time and memory) is swapped too
        written += f", trained_weights {hardware.trained_weights} (benched as fp32)"
    update = {
        "hardware": hardware.model_copy(update={"precision": "fp32", "trained_weights": "fp32"}),
        "teacher": teacher.model_copy(update={"dtype": "float32"}),
        "student": student.model_copy(update={"dtype": "float32"}),
    }
    note = (
        f"--small on a CPU computes in float32 (the recipe has {written}): most CPUs emulate bfloat16 matmuls "
        "many times more slowly; full-size figures and a GPU run keep the recipe's dtypes"
    )
    return recipe.model_copy(update=update), note


def _notes(recipe: Recipe, spec: BenchSpec, factor: int, device: torch.device) -> list[str]:
    notes = ["random weights, no download: speed and memory do not depend on weight values"]
    if spec.small:
        widths = f"widths / {factor}" if factor > 1 else "widths as written (already small)"
        depth = "every layer (--full-depth)" if spec.full_depth else f"at most {SMALL_MAX_LAYERS} layers"
        notes.append(
            f"--small: {widths}, {depth}, vocabularies <= {SMALL_MAX_VOCAB}, "
            "short runs: these figures are NOT those of the real model sizes"
        )
    if device.type == "cpu":
        notes.append(
            "CPU run: peak memory is max-RSS growth, MFU needs --peak-tflops; the CUDA path (synchronize, "
            "max_memory_allocated, datasheet peaks) was not exercised by this run"
        )
    if recipe.family == "logits" and recipe.alignment is not None:
        notes.append(
            "random token ids of each vocabulary, the same number per text on both sides, 4 of 5 aligned by "
            "position; forward_kl / reverse_kl / jsd treat every id below the smaller vocabulary as shared"
        )
        return notes
    if recipe.family == "logits":
        notes.append("random token ids; student and teacher read the same ones (one tokenizer)")
        return notes
    notes.append(
        "training alignment is synthetic (4/5 tokens matched 1:1, the rest in 1:1 split groups); "
        "student and teacher get the same per-prompt length"
    )
    notes.append("inference latency excludes tokenisation; the aligner section times the tokenizers")
    return notes


@shape_stable_attention()
def run_bench(original: Recipe, spec: BenchSpec, progress: Callable[[str], None] = lambda _: None) -> BenchReport:
    """Every section in `spec.only`, in a fixed order; `progress` hears which one starts."""
    recipe, factor = random_weights_recipe(original, spec.small, spec.full_depth)
    device = resolve_device(recipe.hardware)
    recipe, float32_note = _float32_on_cpu(recipe, spec, device)
    lengths = load_lengths()
    results: dict[str, object] = {}
    if "training" in spec.only:
        progress("training step")
        results["training"] = run_training(recipe, spec, lengths, device)
    if "teacher" in spec.only:
        progress("teacher encoding (cache)")
        results["teacher"] = run_teacher(recipe, spec, lengths, device)
    if "aligner" in spec.only:
        progress("aligner (CPU)")
        results["aligner"] = run_aligner(original, spec)
    if "loader" in spec.only:
        progress("training data loader")
        training = results.get("training")
        consumed = training.real_tokens_per_s if training is not None else None
        results["loader"] = run_loader(recipe, original, spec, device, consumed)
    if "inference" in spec.only:
        progress("inference text encoding")
        results["inference"] = run_inference(recipe, original, spec, lengths, device)
    return BenchReport(
        recipe=original.recipe,
        small=spec.small,
        full_depth=spec.full_depth,
        shrink_factor=factor,
        hardware=original.hardware.model_dump(mode="json"),
        environment=Environment(
            device=device.type,
            device_name=device_name(device),
            torch_version=torch.__version__,
            transformers_version=transformers.__version__,
            cpu_threads=torch.get_num_threads(),
        ),
        precision=recipe.hardware.precision,
        teacher_dtype=recipe.teacher.dtype,
        student_dtype=recipe.student.dtype,
        batch_size=recipe.hardware.batch_size,
        lengths=LengthSummary(
            source=str(LENGTHS_FILE) if LENGTHS_FILE.is_file() else "generated (recipe_runner.bench.lengths)",
            count=len(lengths),
            median=statistics.median(lengths),
            p90=percentile(lengths, 0.9),
            max=max(lengths),
            mean=statistics.fmean(lengths),
        ),
        flop_formula=FLOP_FORMULA,
        units=UNITS,
        notes=[*_notes(recipe, spec, factor, device), *([float32_note] if float32_note else [])],
        **results,
    )

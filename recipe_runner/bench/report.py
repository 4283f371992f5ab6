"""The benchmark report: one typed object, written as JSON (every figure, units in the names) and as a table."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from components.atomic_files import write_json_atomic
from recipe_runner.bench.aligner import AlignerResult
from recipe_runner.bench.inference import InferenceResult
from recipe_runner.bench.loader import LoaderResult
from recipe_runner.bench.teacher import TeacherResult
from recipe_runner.bench.training import TrainingResult
from schemas.base import StrictModel


class Environment(StrictModel):
    device: str
    device_name: str
    torch_version: str
    transformers_version: str
    cpu_threads: int


class LengthSummary(StrictModel):
    """The prompt-length distribution that drove the run (tokens)."""

    source: str
    count: int
    median: float
    p90: float
    max: int
    mean: float


class BenchReport(StrictModel):
    recipe: str
    recipe_file: str | None = Field(default=None, description="The recipe file benched (None: from Python).")
    overrides: list[str] = Field(default_factory=list, description="Its --set values, in order.")
    small: bool
    full_depth: bool = Field(description="With small: every layer kept.")
    shrink_factor: int
    hardware: dict = Field(description="The recipe's hardware section as resolved (attention, kernels, ...).")
    environment: Environment
    precision: str
    teacher_dtype: str
    student_dtype: str
    batch_size: int
    lengths: LengthSummary
    flop_formula: str
    units: dict[str, str]
    notes: list[str]
    training: TrainingResult | None = None
    teacher: TeacherResult | None = None
    aligner: AlignerResult | None = None
    loader: LoaderResult | None = None
    inference: InferenceResult | None = None


def write_json(report: BenchReport, path: Path) -> None:
    write_json_atomic(path, report.model_dump(mode="json"))


def _bytes(value: float) -> str:
    for scale, unit in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f} B"


def _rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}" if value >= 100 else f"{value:.3g} {unit}"


def _mfu(mfu: float | None, achieved_tflops: float, peak_tflops: float | None, why: str = "peak unknown") -> str:
    if mfu is None or peak_tflops is None:
        return f"n/a ({why}); {achieved_tflops:.4g} TFLOP/s achieved"
    return f"{mfu:.1%} of {peak_tflops:g} TFLOP/s ({achieved_tflops:.4g} achieved)"


def _compiled(warmup_s: float | None, graphs_while_timed: int | None = None) -> str:
    if warmup_s is None:
        return "off"
    late = f", {graphs_while_timed} graphs compiled while timed" if graphs_while_timed else ""
    return f"on ({warmup_s:.1f} s of warm-up and compiling before the clock{late})"


def _batch(t: TrainingResult) -> str:
    size = (
        f"{t.batch_size}" if t.batch_tokens is None else f"<= {t.batch_size} prompts and <= {t.batch_tokens:,} tokens"
    )
    prompts = f"{t.real_prompts_per_step:.1f} prompts per step"
    return f"{size} x {t.grad_accum} accum, {t.precision} ({prompts})"


def _ops(t: TrainingResult) -> str:
    if t.ops_per_step is None:
        return "not counted (compiled)"
    total = sum(t.ops_per_step.values())
    phases = ", ".join(f"{phase} {count:,}" for phase, count in t.ops_per_step.items())
    return f"{total:,} aten ops ({phases}): {t.real_tokens_per_step / total:.2f} real tokens per op"


def _phases(t: TrainingResult) -> str:
    """Each phase with its share of their sum (phases timed apart, so the sum exceeds an asynchronous step)."""
    total = sum(t.phase_time_s.values()) or 1.0
    timed = [(phase, seconds) for phase, seconds in t.phase_time_s.items() if seconds]
    shares = ", ".join(f"{phase} {seconds * 1000:.1f} ms ({seconds / total:.0%})" for phase, seconds in timed)
    return f"{shares}; sum {total * 1000:.1f} ms, each boundary synchronised"


def _padding(t: TrainingResult) -> str:
    share = f"{t.padding_fraction:.1%}"
    return f"packed; the padded batches were {share} padding" if t.packed_sequences else f"padding {share}"


def _packed(t: TrainingResult) -> str:
    if t.packed_sequences:
        return "yes: student and bolt-on ran on real tokens only"
    return f"no{': ' + t.packing_note if t.packing_note else ''}"


def _peak(t: TrainingResult) -> str:
    on_cpu = t.peak_memory_method.startswith("CPU")
    if t.peak_memory_bytes is None:
        return "not measured (a CPU's high-water mark was set before the steps; see peak_memory_method)"
    if on_cpu:
        return f">= {_bytes(t.peak_memory_bytes)} (CPU: growth of the max RSS, a lower bound)"
    return _bytes(t.peak_memory_bytes)


def _runtime(t: TrainingResult) -> str:
    return ", 1 GiB CUDA runtime" if t.plan_counts_runtime else ""


def _training_rows(t: TrainingResult) -> list[tuple[str, str]]:
    mfu = _mfu(t.mfu, t.achieved_tflops, t.peak_tflops, t.peak_source)
    untimed = f" (the first; not timed: {', '.join(map(repr, t.later_stages))})" if t.later_stages else ""
    return [
        ("stage", f"{t.stage!r}{untimed}"),
        ("batch", _batch(t)),
        ("checkpointing", f"{t.gradient_checkpointing} ({t.checkpointed_fraction:.0%} of timed batches recomputed)"),
        ("weights", f"{t.trained_weights} trained weights"),
        ("compile", _compiled(t.compile_warmup_s, t.graphs_compiled_while_timed)),
        ("packed", _packed(t)),
        ("step time", f"{t.step_time_s * 1000:.1f} ms (mean of {t.timed_steps}, after {t.warmup_steps} warmup)"),
        ("update time", f"{t.update_time_s * 1000:.1f} ms of it: clip, optimizer step, zero grads (timed apart)"),
        ("phases", _phases(t)),
        ("real tokens/s", _rate(t.real_tokens_per_s, "tokens/s")),
        ("real tokens/step", f"{t.real_tokens_per_step:,.0f} ({_padding(t)})"),
        ("model FLOP/s", f"{t.achieved_tflops:.4g} TFLOP/s"),
        ("MFU", mfu),
        ("ops/step", _ops(t)),
        ("peak memory", _peak(t)),
        ("plan estimate", f"{_bytes(t.plan_estimate_bytes)} (`recipe plan`: max_length padding{_runtime(t)})"),
        ("teacher targets", t.teacher_targets),
        ("last loss", f"{t.last_loss:.4f}"),
    ]


def _teacher_rows(t: TeacherResult) -> list[tuple[str, str]]:
    return [
        ("prompts", f"{t.prompts} in batches of <= {t.batch_tokens:,} padded tokens, cache dtype {t.cache_dtype}"),
        ("forward tokens/s", _rate(t.forward_real_tokens_per_s, "tokens/s") + " (teacher forward alone)"),
        ("forward MFU", _mfu(t.forward_mfu, t.forward_tflops, t.forward_peak_tflops)),
        ("compile", _compiled(t.compile_warmup_s)),
        ("real tokens/s", _rate(t.real_tokens_per_s, "tokens/s") + " (incl. host copy + disk write)"),
        ("prompts/s", _rate(t.prompts_per_s, "prompts/s")),
        ("bytes/prompt", _bytes(t.bytes_per_prompt)),
        ("vs padded bf16", f"{t.ratio_vs_padded_bf16:.1%} of {_bytes(t.padded_bf16_bytes_per_prompt)} (target <= 25%)"),
        ("vs padded, same dtype", f"{t.ratio_vs_padded_same_dtype:.1%}"),
    ]


def _aligner_rows(a: AlignerResult) -> list[tuple[str, str]]:
    return [
        ("prompts/s", _rate(a.prompts_per_s, "prompts/s") + " per worker"),
        ("tokens/prompt", f"student {a.student_tokens_per_prompt:.1f}, teacher {a.teacher_tokens_per_prompt:.1f}"),
        ("tokenizers", a.tokenizers),
        ("prompts", f"{a.prompts} from {a.prompts_file}"),
    ]


def _loader_targets(loader: LoaderResult) -> str:
    if loader.cache_dtype is None:
        return "none read: no teacher.cache, the teacher runs in the training step"
    pinned = ", pinned" if loader.pinned else ""
    rate = _bytes(loader.teacher_target_bytes_per_s)
    return f"{rate}/s from the cache (width {loader.teacher_width}, {loader.cache_dtype}){pinned}"


def _loader_rows(loader: LoaderResult) -> list[tuple[str, str]]:
    if loader.headroom is None or loader.training_tokens_per_s is None:  # both set or neither
        keeps_up = "no training section to compare with"
    else:
        verdict = "keeps up" if loader.headroom >= 1 else "training would wait on data: raise hardware.num_workers"
        took = f"{loader.training_tokens_per_s:,.0f} real tokens/s"
        keeps_up = f"{loader.headroom:.1f}x the {took} training took ({verdict})"
    return [
        ("real tokens/s", f"{_rate(loader.real_student_tokens_per_s, 'tokens/s')}, {loader.num_workers} workers"),
        ("vs training", keeps_up),
        ("prompts/s", _rate(loader.prompts_per_s, "prompts/s")),
        ("teacher targets", _loader_targets(loader)),
        ("first batch", f"{loader.first_batch_s:.2f} s (workers starting; not in the rate)"),
        ("prompts", f"{loader.batches} batches of {loader.prompts} prompts from {loader.prompts_file}"),
        ("tokenizers", loader.tokenizers),
    ]


def _inference_rows(i: InferenceResult) -> list[tuple[str, str]]:
    rows = []
    for name, path in (("qwen", i.qwen), ("t5", i.t5)):
        rows.append(
            (
                f"{name} latency",
                f"{path.median_latency_ms:.2f} ms median, {path.p90_latency_ms:.2f} ms p90 "
                f"({path.prompts} prompts, median {path.median_prompt_tokens:.0f} tokens, {path.dtype})",
            )
        )
        full = f"full size {_bytes(path.full_size_weight_bytes)} in {path.full_size_dtype}"
        rows.append((f"{name} weights", f"{_bytes(path.weight_bytes)} ({full})"))
    return rows


def format_report(report: BenchReport) -> str:
    """Readable table: one block per section, then the formula and the notes."""
    env = report.environment
    size = f"SMALL, widths / {report.shrink_factor}" if report.small else "real sizes"
    lines = [
        f"recipe bench {report.recipe}: {size}, {env.device} ({env.device_name}, {env.cpu_threads} threads), "
        f"torch {env.torch_version}",
        f"lengths: {report.lengths.count} from {report.lengths.source}; median {report.lengths.median:g}, "
        f"p90 {report.lengths.p90:g}, max {report.lengths.max} tokens",
    ]
    sections = (
        ("training", report.training, _training_rows),
        ("teacher cache", report.teacher, _teacher_rows),
        ("aligner", report.aligner, _aligner_rows),
        ("data loader", report.loader, _loader_rows),
        ("inference", report.inference, _inference_rows),
    )
    for title, result, rows in sections:
        if result is None:
            continue
        body = rows(result)
        width = max(len(label) for label, _ in body)
        lines += ["", title, "-" * len(title)]
        lines += [f"{label.ljust(width)}  {value}" for label, value in body]
    lines += ["", f"FLOPs: {report.flop_formula}"]
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines) + "\n"

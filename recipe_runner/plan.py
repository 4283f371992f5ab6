"""`recipe plan`: build every model on the meta device and report sizes, trainable parameters and memory.

Nothing is downloaded or allocated: architectures come from inline configs, local config.json files, the
shipped known-architecture table or the local HF cache (components.models.resolve_config).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from components.bolt_on import build_bolt_on, width_chain
from components.losses.logit_losses import feature_keys
from components.models import build_model, hidden_width, lora_parameter_count, lora_target_problem
from components.models.compilation import compile_wanted
from components.models.unused_layers import parameters_past
from recipe_runner.memory import GIB, MemoryEstimate, Sizes, StackShape, estimate_memory
from recipe_runner.next_commands import FROM_PYTHON, NextCommands
from recipe_runner.teacher_answers import unwritten_answers_note
from recipe_runner.trainer.disk_need import DiskNeed, disk_need
from recipe_runner.trainer.loader_workers import batches_in_flight, shared_memory_shortfall
from recipe_runner.trainer.parts import DistillModel, cache_complete, set_trained_dtype
from schemas import Recipe
from schemas.models import ModelSource
from schemas.stages import Part, Stage


@dataclass(frozen=True)
class ComponentPlan:
    """One of teacher, student, bolt-on: where it comes from, its size, storage dtype and output width."""

    name: str
    source: str
    architecture: str
    params: int
    dtype: str
    width: int


@dataclass(frozen=True)
class LayerPlan:
    """One bolt-on layer (or the skip path, index None) with its widths and parameters."""

    index: int | None
    kind: str
    in_width: int
    out_width: int
    params: int


@dataclass(frozen=True)
class StagePlan:
    """What a stage trains (LoRA adapters count for the student when set) and its peak memory."""

    name: str
    trainable: dict[Part, int]
    lora: bool
    memory: MemoryEstimate
    student_trainable: int  # the student's trainable parameters (its LoRA adapters' with LoRA), as estimated

    @property
    def total_trainable(self) -> int:
        return sum(self.trainable.values())


@dataclass(frozen=True)
class Plan:
    """The compiled view of a recipe `recipe plan` prints; `warnings` say what will not fit or not work, and
    `stage_failures` (also among the warnings) what would stop a stage when it starts: `recipe run` refuses them
    before the first step rather than hours later."""

    recipe: str
    teacher: ComponentPlan
    student: ComponentPlan
    bolt_on: ComponentPlan | None  # None: the logits family has none
    bolt_on_layers: tuple[LayerPlan, ...]
    stages: tuple[StagePlan, ...]
    warnings: tuple[str, ...]
    disk: DiskNeed
    stage_failures: tuple[str, ...] = ()
    hints: tuple[str, ...] = ()
    on_cuda: str | None = None  # what packing and compile do in a run on CUDA (None: a recipe for the CPU)

    @property
    def peak(self) -> StagePlan:
        return max(self.stages, key=lambda stage: stage.memory.total_bytes)


def _count(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def _source_name(source: ModelSource) -> str:
    if source.config is not None:
        return f"inline {source.config['model_type']} config (random weights)"
    return str(source.model)


def _component(name: str, source: ModelSource, model: nn.Module, width: int) -> ComponentPlan:
    return ComponentPlan(name, _source_name(source), type(model).__name__, _count(model), source.dtype, width)


def _layer_plans(recipe: Recipe, stack: nn.Module, in_width: int, out_width: int) -> tuple[LayerPlan, ...]:
    chain = width_chain(recipe.bolt_on, in_width)
    layers = [
        LayerPlan(index, spec.type, width_in, width_out, _count(module))
        for spec, module, (index, width_in, width_out) in zip(recipe.bolt_on.layers, stack.layers, chain, strict=True)
    ]
    if stack.skip is not None:
        layers.append(LayerPlan(None, f"skip x{recipe.bolt_on.skip.scale:g}", in_width, out_width, _count(stack.skip)))
    return tuple(layers)


def _memory_warning(stage: StagePlan, recipe: Recipe) -> str:
    hints = []
    if not recipe.hardware.gradient_checkpointing:
        hints.append("hardware.gradient_checkpointing: true")
    if recipe.teacher_cache is None:
        hints.append("teacher.cache")
    if "student" in stage.trainable and not stage.lora:
        hints.append("student_lora")
    smaller = "batch_tokens" if recipe.hardware.batch_tokens is not None else "batch_size"
    hints.append(f"a smaller hardware.{smaller} with grad_accum")
    return (
        f"stage {stage.name!r}: estimated peak {stage.memory.total_gib:.1f} GiB exceeds "
        f"hardware.vram_gb {recipe.hardware.vram_gb:g} GiB; try {', '.join(hints)}"
    )


_HINT_GRANULE = 256  # suggested thresholds are rounded down to this many tokens


def _live_teacher_warning(
    recipe: Recipe, stages: list[StagePlan], sizes: Sizes, commands: NextCommands
) -> tuple[str, bool] | None:
    """The peak a run reaches while its configured cache is not yet written (it then holds the teacher), and
    whether that is over budget; None when the cache is complete or not asked for."""
    if recipe.family != "embedding" or recipe.teacher_cache is None or cache_complete(recipe):
        return None
    live = recipe.model_copy(update={"teacher": recipe.teacher.model_copy(update={"cache": None})})
    peaks = [
        estimate_memory(live, spec, sizes, stage.student_trainable)
        for spec, stage in zip(recipe.stages, stages, strict=True)
    ]
    peak = max(peaks, key=lambda memory: memory.total_gib)
    budget = f" of hardware.vram_gb {peak.budget_gb:g}" if peak.budget_gb is not None else ""
    cached = max(stage.memory.total_gib for stage in stages)
    message = (
        f"teacher.cache.dir {recipe.teacher_cache.dir} holds no complete cache yet: until "
        f"`{commands.command('cache')}` writes it, `recipe run` holds the teacher beside training, "
        f"{peak.total_gib:.1f} GiB at peak{budget} "
        f"(the figures above, {cached:.1f} GiB, are with the cache)"
    )
    return message, peak.over_budget


def _with_hardware(recipe: Recipe, **changes: object) -> Recipe:
    return recipe.model_copy(update={"hardware": recipe.hardware.model_copy(update=changes)})


def _checkpoint_hint(recipe: Recipe, sizes: Sizes, trained: list[tuple[Stage, int]]) -> str | None:
    """Recomputing activations costs about a third more compute per step. When the budget allows it, say how
    much of it can go: all of it, or every batch under some number of padded tokens (most image prompts).

    The hardware section is shared by every stage, so a setting is hinted only if every stage fits with it.
    `trained`: the stages that train the student, with the student's trainable count in each."""
    hw = recipe.hardware
    if hw.vram_gb is None or not hw.gradient_checkpointing or not trained:
        return None

    def fits(candidate: Recipe) -> tuple[bool, float]:
        memories = [estimate_memory(candidate, stage, sizes, count) for stage, count in trained]
        return not any(m.over_budget for m in memories), max(m.total_gib for m in memories)

    which = f"stage {trained[0][0].name!r}" if len(trained) == 1 else "every stage"
    off_fits, off_gib = fits(_with_hardware(recipe, gradient_checkpointing=False, checkpoint_min_tokens=None))
    if off_fits:
        return (
            f"{which}: without gradient_checkpointing the estimate is {off_gib:.1f} GiB, within "
            f"hardware.vram_gb {hw.vram_gb:g}: recomputing costs about a third more compute per step"
        )
    low, high = 0, hw.batch_token_bound(recipe.student.max_length)  # the largest T that fits lies in [low, high)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if fits(_with_hardware(recipe, checkpoint_min_tokens=middle))[0] else (low, middle)
    threshold = low // _HINT_GRANULE * _HINT_GRANULE
    if threshold < _HINT_GRANULE or (hw.checkpoint_min_tokens or 0) >= threshold:
        return None
    gib = fits(_with_hardware(recipe, checkpoint_min_tokens=threshold))[1]
    return (
        f"{which}: hardware.checkpoint_min_tokens: {threshold} still fits hardware.vram_gb "
        f"{hw.vram_gb:g} (estimate {gib:.1f} GiB): batches under {threshold} padded tokens then skip the recompute"
    )


def _projections_of(recipe: Recipe, stage: Stage, sizes: Sizes) -> int:
    """The parameters of the hidden_states projections this stage's own losses use (all are the same size): the
    others get no gradient here, so the optimizer neither moves them nor holds state for them."""

    def hidden(stages: list[Stage]) -> set:
        return {key for key in feature_keys([loss for s in stages for loss in s.losses]) if key[0] == "hidden"}

    every = hidden(recipe.stages)
    return sizes.projection_params * len(hidden([stage])) // len(every) if every else 0


def _stage_plan(recipe: Recipe, stage: Stage, student: nn.Module, sizes: Sizes, failures: list[str]) -> StagePlan:
    """Trainable counts and memory of one stage; LoRA targets peft cannot adapt are appended to `failures`."""
    lora = stage.student_lora if "student" in stage.trainable else None
    projections = _projections_of(recipe, stage, sizes)
    unused = frozenset(parameters_past(student, getattr(recipe.student, "layer", -1)))
    untrained = sum(parameter.numel() for name, parameter in student.named_parameters() if name in unused)
    student_trainable = sizes.student_params - untrained + projections
    if lora is not None:
        problem = lora_target_problem(student, lora)
        if problem is None:
            student_trainable = lora_parameter_count(student, lora, unused) + projections
        else:
            failures.append(f"stage {stage.name!r}: student_lora.target_modules: {problem}")
    trainable: dict[Part, int] = {}
    if "student" in stage.trainable:
        trainable["student"] = student_trainable
    if "bolt_on" in stage.trainable:
        trainable["bolt_on"] = sizes.bolt_on_params
    memory = estimate_memory(recipe, stage, sizes, student_trainable)
    return StagePlan(stage.name, trainable, lora is not None, memory, student_trainable)


def build_plan(recipe: Recipe, commands: NextCommands = FROM_PYTHON) -> Plan:
    """Teacher, student and bolt-on on the meta device -> counts, per-stage trainables and memory estimates;
    `commands` rebuilds what a warning offers to run."""
    teacher = build_model(recipe.teacher, "teacher", meta=True)
    student = build_model(recipe.student, "student", meta=True)
    teacher_width, student_width = hidden_width(teacher.config), hidden_width(student.config)
    logits = recipe.family == "logits"
    if logits:
        from recipe_runner.trainer.logit_parts import LogitsModel, build_projections

        with torch.device("meta"):
            trained: nn.Module = LogitsModel(student, build_projections(recipe, student_width))
        stack = trained.bolt_on
    else:
        with torch.device("meta"):
            stack = build_bolt_on(recipe.bolt_on, student_width, teacher_width)
        trained = DistillModel(student, stack, recipe.student.layer)
    sizes = Sizes(
        teacher_params=_count(teacher),
        teacher=StackShape.of(teacher),
        student_params=_count(student),
        student=StackShape.of(student),
        bolt_on_params=_count(stack),
        projection_params=_count(trained.projections) if logits else 0,
        feature_kinds=frozenset(
            key[0] for key in feature_keys([loss for stage in recipe.stages for loss in stage.losses])
        ),
    )
    failures: list[str] = []
    stages = [_stage_plan(recipe, stage, student, sizes, failures) for stage in recipe.stages]
    # Sized as training holds the model: trained parts in float32, or bfloat16 under bf16_stochastic.
    disk = disk_need(set_trained_dtype(trained, recipe), recipe)
    warnings = list(failures)
    warnings.extend(_memory_warning(stage, recipe) for stage in stages if stage.memory.over_budget)
    trained = [(spec, plan.student_trainable) for spec, plan in zip(recipe.stages, stages, strict=True)]
    trained = [(spec, count) for spec, count in trained if "student" in spec.trainable]
    over = any(stage.memory.over_budget for stage in stages)
    hint = None if over else _checkpoint_hint(recipe, sizes, trained)
    hints = [] if hint is None else [hint]
    for said in (
        _live_teacher_warning(recipe, stages, sizes, commands),
        unwritten_answers_note(recipe, sizes.teacher_params, commands),
    ):
        if said is not None:
            (warnings if said[1] else hints).append(said[0])
    if recipe.hardware.distributed == "ddp":
        hints.append(_per_process(recipe))
    shared = shared_memory_shortfall(recipe, teacher_width, batches=batches_in_flight(recipe.hardware.num_workers))
    warnings += [] if shared is None else [shared]
    return Plan(
        recipe=recipe.recipe,
        teacher=_component("teacher", recipe.teacher, teacher, teacher_width),
        student=_component("student", recipe.student, student, student_width),
        bolt_on=None
        if logits
        else ComponentPlan(
            "bolt_on",
            f"{len(recipe.bolt_on.layers)} layers",
            "BoltOnStack",
            sizes.bolt_on_params,
            "float32",
            teacher_width,
        ),
        bolt_on_layers=() if logits else _layer_plans(recipe, stack, student_width, teacher_width),
        stages=tuple(stages),
        warnings=tuple(warnings),
        disk=disk,
        stage_failures=tuple(failures),
        hints=tuple(hints),
        on_cuda=None if recipe.hardware.device == "cpu" else _on_cuda(recipe, student, teacher),
    )


def _per_process(recipe: Recipe) -> str:
    """What a DDP launch multiplies: the plan sizes one process, and the batch the processes together make."""
    hw = recipe.hardware
    per_step = f"{hw.batch_size} prompts" + (f" x {hw.grad_accum} micro-batches" if hw.grad_accum > 1 else "")
    return (
        "hardware.distributed is ddp: the memory above is that of each process (each holds the models, the teacher "
        f"too unless it is cached) on its own device; an optimizer step takes {per_step} from each process, N times "
        "that over a launch of N processes"
    )


def _on_cuda(recipe: Recipe, student: nn.Module, teacher: nn.Module) -> str:
    """The speed settings `auto` resolves to on a GPU, so that a plan made on a laptop tells what a run will do."""
    from recipe_runner.trainer.packing import packing_on_cuda

    compiled = compile_wanted(recipe.hardware.compile, "cuda")
    parts = "student layers" if recipe.family == "logits" else "student and bolt-on layers and loss"
    compiling = f"compiled {parts}" if compiled else "eager (hardware.compile: false)"
    return f"{packing_on_cuda(student, recipe, teacher)}; {compiling}"


def _params(count: int) -> str:
    """Human-scale parameter count: 4.76B, 595.8M, 12.3K."""
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.2f}{suffix}" if suffix == "B" else f"{count / scale:.1f}{suffix}"
    return str(count)


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    """Left-aligned columns two spaces apart, a dashed rule under the header."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(row: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()

    return [line(header), line(tuple("-" * width for width in widths)), *(line(row) for row in rows)]


def _stage_row(stage: StagePlan) -> tuple[str, ...]:
    student = stage.trainable.get("student")
    bolt_on = stage.trainable.get("bolt_on")
    return (
        stage.name,
        "frozen" if student is None else _params(student) + (" (LoRA)" if stage.lora else ""),
        "frozen" if bolt_on is None else _params(bolt_on),
        _params(stage.total_trainable),
        f"{stage.memory.total_gib:.1f} GiB",
    )


def format_plan(plan: Plan, recipe_warnings: tuple[str, ...] = ()) -> str:
    """The plan as text: components, bolt-on widths layer by layer, trainables per stage, memory, warnings (the
    recipe file's own first, each at its file:line: see recipe_warnings)."""
    out = [f"recipe {plan.recipe}", ""]
    components = [c for c in (plan.teacher, plan.student, plan.bolt_on) if c is not None]
    out += _table(
        ("component", "source", "class", "params", "dtype", "width"),
        [(c.name, c.source, c.architecture, _params(c.params), c.dtype, str(c.width)) for c in components],
    )
    if plan.bolt_on is not None:
        out += ["", f"bolt-on {plan.student.width} -> {plan.bolt_on.width}"]
        out += _table(
            ("#", "layer", "in", "out", "params"),
            [
                (
                    "" if layer.index is None else str(layer.index),
                    layer.kind,
                    str(layer.in_width),
                    str(layer.out_width),
                    _params(layer.params),
                )
                for layer in plan.bolt_on_layers
            ],
        )
    out += [""]
    rows = [_stage_row(stage) for stage in plan.stages]
    header = ("stage", "student", "bolt_on", "trainable", "peak memory")
    if plan.bolt_on is None:  # logits family: no bolt-on column
        header, rows = header[:2] + header[3:], [row[:2] + row[3:] for row in rows]
    out += _table(header, rows)
    peak = plan.peak.memory
    budget = f" of {peak.budget_gb:g} GiB budget" if peak.budget_gb is not None else " (no hardware.vram_gb budget)"
    batch = f"largest micro-batch {peak.batch_tokens:,} padded tokens"
    out += ["", f"peak memory, stage {peak.stage!r} ({batch}): {peak.total_gib:.1f} GiB{budget}"]
    out += _table(("item", "GiB"), [(item.label, f"{item.bytes / GIB:.2f}") for item in peak.items])
    out += ["", f"disk (output.dir): {plan.disk.describe()}"]
    if plan.on_cuda is not None:
        out += [f"on CUDA: {plan.on_cuda}"]
    out += [f"warning: {warning}" for warning in (*recipe_warnings, *plan.warnings)]
    out += [f"hint: {hint}" for hint in plan.hints]
    return "\n".join(out) + "\n"

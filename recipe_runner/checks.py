"""Semantic checks: a recipe that validates must not fail later for a reason visible now."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from recipe_runner.architecture_checks import built_on_meta, inline_config_problems, position_problems
from recipe_runner.errors import Path_, Problem
from recipe_runner.family_checks import (
    attention_problems,
    family_problems,
    feature_layer_problems,
    mask_token_problems,
    no_shared_tokens_problems,
    shared_tokenizer_problem,
)
from recipe_runner.file_checks import file_problems, weights_problems
from recipe_runner.loader import LoadedRecipe
from recipe_runner.schema_errors import with_overrides
from recipe_runner.trainer.loader_workers import shared_memory_shortfall
from schemas import Recipe
from schemas.bolt_on import RMSNormLayer, TransformerLayer
from schemas.models import HiddenStatesStudent, ModelSource
from schemas.stages import Stage, TierLoss

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig


ROLES = ("teacher", "student")


def remote_code_problems(loaded: LoadedRecipe, allow_remote_code: bool) -> list[Problem]:
    """`trust_remote_code: true` without the runner's `--trust-remote-code`: reading such a model's config would
    already import its code, so this is decided before anything is read."""
    from components.models import remote_code_refusal

    if allow_remote_code:
        return []
    problems = []
    for role in ROLES:
        refusal = remote_code_refusal(getattr(loaded.recipe, role))
        if refusal is not None:
            problems.append(loaded.problem((role, "trust_remote_code"), refusal))
    return problems


def _source_field(source: ModelSource) -> str:
    return "model" if source.model is not None else "config"


def _configs(loaded: LoadedRecipe) -> tuple[dict[str, PretrainedConfig], list[Problem]]:
    """Architecture configs of teacher and student (no weights are read); a role that cannot be read is left out."""
    from components.models import ModelSourceError, resolve_config

    configs: dict[str, PretrainedConfig] = {}
    problems = []
    for role in ROLES:
        source: ModelSource = getattr(loaded.recipe, role)
        try:
            configs[role] = resolve_config(source)
        except ModelSourceError as exc:
            problems.append(loaded.problem((role, _source_field(source)), str(exc)))
        except Exception as exc:  # transformers raises many kinds for a bad inline config
            message = " ".join(str(exc).split())  # one line: transformers' messages span several
            problems.append(loaded.problem((role, _source_field(source)), f"cannot read the architecture: {message}"))
    return configs, problems


def _teacher_kind_problems(loaded: LoadedRecipe, configs: dict[str, PretrainedConfig]) -> list[Problem]:
    """A t5_encoder teacher is built as T5EncoderModel, which reads T5-only settings from its config. An unusable
    teacher config is dropped from `configs`, so no later check measures it."""
    from transformers import T5Config

    teacher = loaded.recipe.teacher
    config = configs.get("teacher")
    if config is None or teacher.type != "t5_encoder" or isinstance(config, T5Config):
        return []
    del configs["teacher"]
    field = ("teacher", "config", "model_type") if teacher.config is not None else ("teacher", "model")
    return [
        loaded.problem(
            field,
            f"a {teacher.type} teacher needs a T5 architecture (model_type t5), not {config.model_type!r}",
        )
    ]


def _widths(loaded: LoadedRecipe, configs: dict[str, PretrainedConfig]) -> tuple[dict[str, int], list[Problem]]:
    """Hidden widths of teacher and student from their configs."""
    from components.models import ModelSourceError, hidden_width

    widths: dict[str, int] = {}
    problems = []
    for role, config in configs.items():
        try:
            widths[role] = hidden_width(config)
        except ModelSourceError as exc:
            problems.append(loaded.problem((role, _source_field(getattr(loaded.recipe, role))), str(exc)))
    return widths, problems


def _student_layer_problems(loaded: LoadedRecipe, configs: dict[str, PretrainedConfig]) -> list[Problem]:
    """hidden_states holds the embeddings plus one entry per layer: indices -(layers + 1) .. layers."""
    student = loaded.recipe.student
    if not isinstance(student, HiddenStatesStudent):
        return []
    layers = getattr(configs.get("student"), "num_hidden_layers", None)
    layer = student.layer
    if not isinstance(layers, int) or -(layers + 1) <= layer <= layers:
        return []
    return [
        loaded.problem(
            ("student", "layer"),
            f"layer {layer} does not exist: the student has {layers} layers, so its hidden states are "
            f"-{layers + 1}..{layers} (0 the embeddings, -1 the last layer)",
        )
    ]


def _tokenizers(loaded: LoadedRecipe) -> tuple[dict[str, object], list[Problem]]:
    """The tokenizers that can be read offline. One on disk that cannot be read is a problem of the
    recipe; one of a hub id without a local copy is reported where it is first needed (cache, run)."""
    from components.models import load_tokenizer

    tokenizers, problems = {}, []
    for role in ROLES:
        source: ModelSource = getattr(loaded.recipe, role)
        reference = source.tokenizer or source.model
        try:
            tokenizers[role] = load_tokenizer(source)
        except Exception as exc:
            if reference is not None and Path(reference).expanduser().exists():  # on disk (a missing path: below)
                field = (role, "tokenizer" if source.tokenizer is not None else "model")
                problems.append(loaded.problem(field, " ".join(str(exc).split())))
    return tokenizers, problems


def _vocabulary_problems(
    loaded: LoadedRecipe, configs: dict[str, PretrainedConfig], tokenizers: dict[str, object]
) -> list[Problem]:
    """Every token id the tokenizer emits must have a row in the embedding, or the first batch fails to index it.
    Checked when both are known offline."""
    problems = []
    for role, config in configs.items():
        source: ModelSource = getattr(loaded.recipe, role)
        rows, tokenizer = getattr(config, "vocab_size", None), tokenizers.get(role)
        if not isinstance(rows, int) or tokenizer is None:
            continue
        tokens = len(tokenizer)
        if tokens > rows:
            if source.config is not None:
                field: tuple[str, ...] = (role, "config", "vocab_size")
            else:
                field = (role, "tokenizer" if source.tokenizer is not None else "model")
            problems.append(
                loaded.problem(
                    field,
                    f"the {role} embedding has {rows} rows but its tokenizer has {tokens} tokens: ids from {rows} "
                    f"up would index past it; set vocab_size to at least {tokens} or use the model's own tokenizer",
                )
            )
    return problems


def _lora_problems(loaded: LoadedRecipe, student: nn.Module) -> list[Problem]:
    """LoRA targets are module names of the student: matched against its module tree, built on the meta device."""
    from components.models import lora_target_problem

    recipe = loaded.recipe
    stages = [(i, s.student_lora) for i, s in enumerate(recipe.stages) if s.student_lora and "student" in s.trainable]
    problems = []
    for index, lora in stages:
        problem = lora_target_problem(student, lora)
        if problem is not None:
            problems.append(loaded.problem(("stages", index, "student_lora", "target_modules"), problem))
    return problems


def _installed_diffusers():
    """diffusers when installed (its classes name the keys each mapping takes), else None: the keys go unchecked."""
    from components.inference.chroma import InferenceError, import_diffusers

    try:
        return import_diffusers()
    except InferenceError:  # not installed, or a version without Chroma: `recipe infer` says which
        return None


def _inline_pipeline_problems(loaded: LoadedRecipe, teacher_width: int) -> list[Problem]:
    """An inline Chroma pipeline reads text of the teacher's width (both encoders end there); a published one is
    checked by `recipe infer`, which has its config."""
    from components.inference import joint_attention_dim
    from components.inference.pipeline_config import pipeline_config_problems

    inference = loaded.recipe.inference
    if inference is None or inference.pipeline_config is None:
        return []
    shape = pipeline_config_problems(inference.pipeline_config, _installed_diffusers())
    if shape:  # a misspelt or missing `transformer` leaves no width worth comparing
        here = ("inference", "pipeline_config")
        return [loaded.problem(here + path, message) for path, message in shape]
    transformer = dict(inference.pipeline_config.get("transformer") or {})
    width = joint_attention_dim(inference)
    if width == teacher_width:
        return []
    here = ("inference", "pipeline_config", "transformer")
    field = here + ("joint_attention_dim",) if "joint_attention_dim" in transformer else here
    message = f"joint_attention_dim {width} must equal the teacher width {teacher_width}: the transformer reads text"
    return [loaded.problem(field, message + " encoded by the teacher or by the distilled student")]


def _model_problems(loaded: LoadedRecipe) -> tuple[list[Problem], set[str]]:
    """Everything read from the architectures (width checks need both of them); also which ones were readable."""
    configs, problems = _configs(loaded)
    problems += weights_problems(loaded, configs)
    problems += _teacher_kind_problems(loaded, configs)
    problems += inline_config_problems(loaded, configs)
    models, build_problems = built_on_meta(loaded, configs)
    problems += build_problems
    widths, width_problems = _widths(loaded, configs)
    problems += width_problems
    if len(widths) == 2 and loaded.recipe.family == "embedding":
        problems += _bolt_on_problems(loaded, widths)
    if "teacher" in widths:
        problems += _inline_pipeline_problems(loaded, widths["teacher"])
        shortfall = shared_memory_shortfall(loaded.recipe, widths["teacher"], batches=1)
        problems += [] if shortfall is None else [loaded.problem(("hardware", "num_workers"), shortfall)]
    problems += _student_layer_problems(loaded, configs)
    problems += position_problems(loaded, configs)
    problems += feature_layer_problems(loaded, configs)
    tokenizers, tokenizer_problems = _tokenizers(loaded)
    problems += tokenizer_problems
    problems += _vocabulary_problems(loaded, configs, tokenizers)
    shared = shared_tokenizer_problem(loaded, tokenizers)
    problems += [shared] if shared else []
    problems += no_shared_tokens_problems(loaded, tokenizers)
    problems += mask_token_problems(loaded, tokenizers)
    if "student" in models:
        problems += _lora_problems(loaded, models["student"])
        problems += _packing_problems(loaded, models["student"], models.get("teacher"))
    return problems, set(configs)


def _packing_problems(loaded: LoadedRecipe, student: nn.Module, teacher: nn.Module | None) -> list[Problem]:
    """`packed_sequences: true` that the run would refuse at setup, on the device it names (auto: this machine's)."""
    import torch

    from components.devices import resolve_device
    from recipe_runner.trainer.packing import packing_refusal

    hw = loaded.recipe.hardware
    device = resolve_device(hw) if hw.device == "auto" else torch.device(hw.device)
    refusal = packing_refusal(student, loaded.recipe, device, teacher)
    return [loaded.problem(("hardware", "packed_sequences"), refusal)] if refusal else []


def _bolt_on_problems(loaded: LoadedRecipe, widths: dict[str, int]) -> list[Problem]:
    from components.bolt_on import width_chain

    recipe = loaded.recipe
    student, teacher = widths["student"], widths["teacher"]
    problems = []
    current, sized_by = student, None
    for index, layer_in, layer_out in width_chain(recipe.bolt_on, student):
        layer = recipe.bolt_on.layers[index]
        if getattr(layer, "out_dim", None) is not None or isinstance(layer, TransformerLayer):
            sized_by = index  # the last layer that sets the width the stack ends with (a transformer's is its dim)
        here = ("bolt_on", "layers", index)
        if isinstance(layer, TransformerLayer):
            if layer.dim != layer_in:
                problems.append(
                    loaded.problem(
                        here + ("dim",),
                        f"transformer width {layer.dim} does not match its input width {layer_in} "
                        f"(from {'the student' if index == 0 else f'layer {index - 1}'}); "
                        f"put a linear layer with out_dim: {layer.dim} before it or set dim: {layer_in}",
                    )
                )
            if layer.dim % layer.heads:
                problems.append(loaded.problem(here + ("heads",), f"{layer.heads} heads do not divide dim {layer.dim}"))
            if layer.positions == "sinusoidal" and layer.max_positions < recipe.student.max_length:
                problems.append(
                    loaded.problem(
                        here + ("max_positions",),
                        f"max_positions {layer.max_positions} is shorter than student.max_length "
                        f"{recipe.student.max_length}",
                    )
                )
        if isinstance(layer, RMSNormLayer) and layer.init_from == "teacher.final_norm" and layer_in != teacher:
            problems.append(
                loaded.problem(
                    here + ("init_from",),
                    f"teacher.final_norm has width {teacher} but this layer's width is {layer_in}; "
                    "place the rms_norm where the width equals the teacher's, or drop init_from",
                )
            )
        current = layer_out
    if current != teacher:
        ending = f"end the stack with {{type: linear, out_dim: {teacher}}}"
        if sized_by is not None and isinstance(recipe.bolt_on.layers[sized_by], TransformerLayer):
            where: Path_ = ("bolt_on", "layers", sized_by, "dim")  # its dim must stay its input's width
            fix = f"a transformer keeps the width it reads; {ending} after it"
        elif sized_by is not None:  # the out_dim that made the width, not the width-keeping layers after it
            where = ("bolt_on", "layers", sized_by, "out_dim")
            fix = f"set out_dim: {teacher} here, or {ending}"
        else:
            where = ("bolt_on", "layers", len(recipe.bolt_on.layers) - 1) if recipe.bolt_on.layers else ("bolt_on",)
            fix = f"the layers keep the student's width; {ending}"
        problems.append(
            loaded.problem(
                where,
                f"bolt-on output width {current} must equal the teacher width {teacher} (student width {student}); "
                + fix,
            )
        )
    return problems


def stage_problems(loaded: LoadedRecipe, stages: list[tuple[int, Stage]]) -> list[Problem]:
    """Checks of the given stages (index, stage), which need only them, `bolt_on` and `alignment`: run as well
    on the stages that passed the schema when others did not."""
    recipe: Recipe = loaded.recipe
    problems = []
    has_bolt_on = recipe.bolt_on.present
    tiers = set(recipe.alignment.tiers) if recipe.alignment is not None else None
    first_named: dict[str, int] = {}
    for index, stage in stages:
        here = ("stages", index)
        if stage.name in first_named:  # the metrics and the progress bar tell stages apart by name
            earlier = first_named[stage.name]
            problems.append(loaded.problem(here + ("name",), f"stages[{earlier}] is also named {stage.name!r}"))
        first_named.setdefault(stage.name, index)
        for part_index, part in enumerate(stage.trainable):
            if part == "bolt_on" and not has_bolt_on:
                problems.append(loaded.problem(here + ("trainable", part_index), "the recipe has no bolt_on layers"))
            lr = stage.lr.get(part)
            if lr is None:
                problems.append(loaded.problem(here + ("lr",), f"no learning rate for trainable part {part!r}"))
            elif stage.min_lr.get(part) is not None and stage.min_lr.get(part) > lr:
                lr_from = loaded.tree.position_of(here + ("lr", part))
                given = with_overrides([lr_from]) if lr_from.is_override else ""
                problems.append(
                    loaded.problem(
                        here + ("min_lr", part),
                        f"min_lr {stage.min_lr.get(part)} is above lr {lr}{given}: lower it, or set it to null (lr/10)",
                    )
                )
        if stage.student_lora is not None and "student" not in stage.trainable:
            problems.append(loaded.problem(here + ("student_lora",), "LoRA needs `student` in `trainable`"))
        for loss_index, loss in enumerate(stage.losses):
            if tiers is not None and isinstance(loss, TierLoss) and loss.on not in tiers:
                problems.append(
                    loaded.problem(
                        here + ("losses", loss_index, "on"),
                        f"tier {loss.on!r} is not computed; alignment.tiers is {sorted(tiers)}: add {loss.on!r} "
                        "there, or remove this loss",
                    )
                )
        if all(loss.weight == 0 for loss in stage.losses):
            problems.append(loaded.problem(here + ("losses",), "all loss weights are zero: nothing would train"))
    return problems


def hardware_problems(loaded: LoadedRecipe) -> list[Problem]:
    import torch

    hw = loaded.recipe.hardware
    problems = []
    if hw.device == "cpu" and hw.precision == "fp16":
        problems.append(loaded.problem(("hardware", "precision"), "fp16 needs a GPU; use bf16 or fp32 on the CPU"))
    gpu_without_bf16 = torch.cuda.is_available() and not torch.cuda.is_bf16_supported()
    if hw.device == "cuda" and hw.precision == "bf16" and gpu_without_bf16:
        problems.append(loaded.problem(("hardware", "precision"), "this GPU has no bf16; use fp16 or fp32"))
    if hw.checkpoint_min_tokens is not None and not hw.gradient_checkpointing:
        problems.append(
            loaded.problem(
                ("hardware", "checkpoint_min_tokens"),
                "has no effect without gradient_checkpointing: true; set that or remove this",
            )
        )
    problems += _batch_token_problems(loaded)
    if hw.trained_weights == "bf16_stochastic" and hw.precision != "bf16":
        where = ("hardware", "trained_weights")
        problems.append(loaded.problem(where, f"bf16_stochastic needs precision: bf16 (not {hw.precision})"))
    if hw.backend == "unsloth":
        problems.append(loaded.problem(("hardware", "backend"), "unsloth is not supported yet; use accelerate"))
    if hw.distributed == "fsdp":
        problems.append(loaded.problem(("hardware", "distributed"), "fsdp is not supported yet; use ddp or none"))
    return problems


def _batch_token_problems(loaded: LoadedRecipe) -> list[Problem]:
    hw, longest = loaded.recipe.hardware, loaded.recipe.student.max_length
    where = ("hardware", "batch_tokens")
    if hw.batch_tokens is None:
        return []
    if hw.batch_tokens < longest:
        return [
            loaded.problem(
                where,
                f"{hw.batch_tokens} is below student.max_length {longest}: a prompt of that length would not fit "
                f"a batch; raise it to at least {longest} or lower student.max_length",
            )
        ]
    if hw.batch_tokens >= hw.batch_size * longest:
        return [
            loaded.problem(
                where,
                f"has no effect: batch_size {hw.batch_size} x student.max_length {longest} = "
                f"{hw.batch_size * longest} tokens never exceeds it; raise batch_size (the prompt cap) to let short "
                "prompts fill the budget, or remove this",
            )
        ]
    return []


def semantic_problems(
    loaded: LoadedRecipe, allow_remote_code: bool = False, unread: frozenset[str] = frozenset()
) -> list[Problem]:
    """All semantic problems at once; models are read only when that runs no code the runner did not allow.
    `unread`: what the calling verb never reads ("data": the prompt files, "cache": the teacher cache), whose
    state is then no reason to refuse it (rendering needs no prompt file, and never a cache)."""
    problems = remote_code_problems(loaded, allow_remote_code)
    family = family_problems(loaded)
    readable: set[str] = set()
    if not problems and not family:  # the model checks read sections as the recipe's family uses them
        model_problems, readable = _model_problems(loaded)
        problems += model_problems
    problems += family + attention_problems(loaded)
    problems += stage_problems(loaded, list(enumerate(loaded.recipe.stages)))
    problems += file_problems(loaded, unread)
    problems += hardware_problems(loaded)
    from components.cache.manifest import cache_problems

    if "teacher" in readable and "cache" not in unread:  # a broken teacher: comparing a cache with it is noise
        from recipe_runner.teacher_answers import answers_problems

        problems += cache_problems(loaded) + answers_problems(loaded)
    return problems

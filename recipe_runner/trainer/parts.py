"""Build what a run trains and reads from a typed recipe: models, tokenizers, aligner, datasets."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from components.alignment import CrossTokenizerAligner
from components.bolt_on import build_bolt_on
from components.cache.manifest import read_manifest
from components.cache.reader import CacheDamagedError, CachedTeacher, CacheIncompleteError
from components.cache.reuse import reuse_hint
from components.data.pipeline import Collator, PromptPairs
from components.data.prompts import DataFileError, prompts_digest, read_prompts
from components.data.texts import TextCollator, TextSamples
from components.errors import UserFacingError
from components.losses.vocab_map import VocabMap
from components.models import build_model, freeze, hidden_width, load_tokenizer, pad_id, resolve_config
from components.models.checkpointing import StudentCheckpointing
from components.models.final_norm_weight import final_norm_weight
from components.models.packed_attention import use_packed_attention
from components.packed_sequences import PackedSequences
from recipe_runner.next_commands import FROM_PYTHON, NextCommands
from schemas import Recipe
from schemas.stages import Stage


class RunSetupError(UserFacingError, RuntimeError):
    """Something a run needs is missing; the message says what to do."""

    alike_in_every_process = True  # every process sets up from the same recipe and files


def as_input_of(module: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """`hidden` in `module`'s dtype: a student held in bf16 (frozen, or trained only through LoRA) feeds float32
    layers, which without autocast (precision fp32) refuse another dtype."""
    parameter = next(module.parameters(), None)
    return hidden if parameter is None else hidden.to(parameter.dtype)


class DistillModel(nn.Module):
    """Student plus bolt-on as one module, so accelerate wraps and syncs them together. With packed sequences
    both run on the batch's real tokens only; the output is padded again for the losses."""

    def __init__(self, student: nn.Module, bolt_on: nn.Module, hidden_layer: int) -> None:
        super().__init__()
        if getattr(student.config, "use_cache", None):
            # A KV cache is for generation: in a training forward it costs a concatenation per layer, memory,
            # and (compiled) a recompile per layer as each cache layer initialises.
            student.config.use_cache = False
        self.student = student
        self.bolt_on = bolt_on
        self.hidden_layer = hidden_layer
        self.packed = False

    def student_side(self) -> list[nn.Module]:
        """What trains as the `student` part."""
        return [self.student]

    def train(self, mode: bool = True) -> DistillModel:
        """A student the stage freezes (no LoRA either) stays in eval mode, as a frozen teacher does: dropout noise
        in the features a bolt-on learns from would be absent from the ones it reads at inference."""
        super().train(mode)
        if mode and not any(parameter.requires_grad for parameter in self.student.parameters()):
            self.student.eval()
        return self

    def train_extras(self, stage: Stage) -> None:
        """Nothing trains beside the student and the bolt-on here (see LogitsModel)."""

    def use_packed_sequences(self) -> None:
        """From now on every forward packs (see components.packed_sequences); the student's attention is ours."""
        use_packed_attention(self.student)
        self.packed = True

    def forward(
        self, input_ids: torch.Tensor, mask: torch.Tensor, packing: PackedSequences | None = None
    ) -> torch.Tensor:
        """[B, L] ids and bool mask -> [B, L, teacher width]. `packing`: the collator's PackedSequences of `mask`
        (computed here when missing, at the cost of a device synchronisation); unused unless packed."""
        if self.packed:
            return self._packed_forward(input_ids, packing or PackedSequences.from_mask(mask))
        if self.hidden_layer == -1:
            hidden = self.student(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state
        else:
            out = self.student(input_ids=input_ids, attention_mask=mask.long(), output_hidden_states=True)
            hidden = out.hidden_states[self.hidden_layer]
        return self.bolt_on(as_input_of(self.bolt_on, hidden), mask)

    def _packed_forward(self, input_ids: torch.Tensor, packing: PackedSequences) -> torch.Tensor:
        ids, positions = packing.pack(input_ids)[None], packing.positions[None]
        wanted = self.hidden_layer != -1
        out = self.student(input_ids=ids, position_ids=positions, packed_sequences=packing, output_hidden_states=wanted)
        hidden = out.hidden_states[self.hidden_layer] if wanted else out.last_hidden_state
        return packing.unpack(self.bolt_on(as_input_of(self.bolt_on, hidden), packing)[0])


@dataclass
class RunParts:
    """Everything a run needs before the first step."""

    model: DistillModel
    checkpointing: StudentCheckpointing
    teacher: nn.Module | None
    student_tokenizer: object
    teacher_tokenizer: object
    train: PromptPairs | TextSamples
    eval: PromptPairs | TextSamples | None
    collate: Collator | TextCollator  # items of `train` and `eval` -> one batch
    vocab_map: VocabMap | None = None  # ids both tokenizers share, for divergences across two vocabularies

    @property
    def reads_cache(self) -> bool:
        return any(isinstance(pairs, PromptPairs) and pairs.cache is not None for pairs in (self.train, self.eval))


def split_prompts(recipe: Recipe) -> tuple[list[str], list[str]]:
    """Train and eval prompts; without an eval file, a fixed fraction of train is held out."""
    train = read_prompts(recipe.data.train)
    if recipe.data.eval is not None:
        return train, read_prompts(recipe.data.eval)
    if recipe.data.eval_fraction > 0:
        held = max(1, int(len(train) * recipe.data.eval_fraction))
        if held >= len(train):
            raise DataFileError(
                f"data.eval_fraction {recipe.data.eval_fraction} holds out all {len(train)} prompt(s) of "
                f"{recipe.data.train.path}, leaving none to train on: add prompts, lower data.eval_fraction, or give "
                "held-out prompts in data.eval"
            )
        return train[held:], train[:held]
    return train, []


def open_cache(recipe: Recipe, split: str, prompts: list[str], commands: NextCommands) -> CachedTeacher | None:
    """The split's cache when complete; `require: true` turns a missing cache into an error that says how to
    write it (with this run's --set values, from `commands`)."""
    spec = recipe.teacher_cache
    if spec is None:
        return None
    split_dir = Path(spec.dir) / split
    try:
        cache = CachedTeacher(split_dir)
    except (CacheIncompleteError, CacheDamagedError) as exc:  # damage: a shard cut short, which any rerun finds
        if isinstance(exc, CacheIncompleteError) and not spec.require:
            return None
        raise RunSetupError(f"{exc}; with this run's settings: `{commands.command('cache')}`") from None
    # Teacher outputs of other prompts would be paired with these prompts silently: same count is not enough.
    made_from = (read_manifest(split_dir) or {}).get("prompts_sha256")
    if len(cache) != len(prompts) or made_from != prompts_digest(prompts):
        raise RunSetupError(
            f"cache {split_dir} was made from other prompts than data.{split} ({len(cache)} cached, "
            f"{len(prompts)} now): delete it and rerun `{commands.command('cache')}`, {reuse_hint(spec.dir)}"
        )
    return cache


def cache_complete(recipe: Recipe) -> bool:
    """Whether every split a run reads has a complete, readable cache: what lets it leave the teacher unloaded."""
    spec = recipe.teacher_cache
    if spec is None or not Path(spec.dir).is_dir():  # then the prompts need no reading
        return False
    try:
        for split, prompts in zip(("train", "eval"), split_prompts(recipe), strict=True):
            if prompts:
                CachedTeacher(Path(spec.dir) / split)
    except UserFacingError:  # missing, incomplete or damaged (`recipe cache` says which), or unreadable prompts
        return False
    return True


def live_teacher_note(recipe: Recipe, commands: NextCommands) -> str:
    """What a run says when its cache is configured but incomplete: `recipe plan` sized it with the cache."""
    assert recipe.teacher_cache is not None
    return (
        f"teacher.cache.dir {recipe.teacher_cache.dir} holds no complete cache ({_what_is_missing(recipe)}): the "
        "teacher runs beside training, "
        f"its weights on the device, at every step; `{commands.command('cache')}` writes the cache once "
        "(`teacher.cache.require: true` stops a run that has none)"
    )


def _what_is_missing(recipe: Recipe) -> str:
    """Per split, why its cache cannot be read: not written, or the shards missing."""
    assert recipe.teacher_cache is not None
    held_out = recipe.data.eval is not None or recipe.data.eval_fraction > 0
    said = []
    for split in ("train", "eval") if held_out else ("train",):
        split_dir = Path(recipe.teacher_cache.dir) / split
        try:
            CachedTeacher(split_dir)
        except (CacheIncompleteError, CacheDamagedError) as exc:
            said.append(f"{split}: {exc}" if split_dir.exists() else f"{split}: not written")
    return "; ".join(said)


def build_distill_model(recipe: Recipe, device: torch.device | str, teacher_width: int) -> DistillModel:
    """Student + seeded bolt-on exactly as training builds them (the export rebuilds from a checkpoint with it)."""
    seed = recipe.hardware.seed
    hw = recipe.hardware
    student = build_model(
        recipe.student, "student", device=device, attention=hw.attention, seed=seed, fused_kernels=hw.fused_kernels
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bolt_on = build_bolt_on(recipe.bolt_on, hidden_width(student.config), teacher_width)
    return set_trained_dtype(DistillModel(student, bolt_on.to(device), recipe.student.layer), recipe)


def trained_dtype(trained_weights: str) -> torch.dtype:
    """The dtype of what the optimizer updates, for `hardware.trained_weights`."""
    return torch.bfloat16 if trained_weights == "bf16_stochastic" else torch.float32


def set_trained_dtype(model: DistillModel, recipe: Recipe) -> DistillModel:
    """fp32: trained parts become float32 masters and autocast computes in bf16/fp16 (accelerate mixed precision).
    bf16_stochastic: trained parts are stored in bfloat16 and the optimizer rounds each update stochastically.

    A student trained only through LoRA keeps its weights in `student.dtype`: they are never updated, so float32
    copies would only double their memory (the adapters take the trained dtype as each stage wraps them)."""
    dtype = trained_dtype(recipe.hardware.trained_weights)
    if any("student" in stage.trainable for stage in recipe.stages):
        for module in model.student_side():
            if module is not model.student or recipe.trains_student_weights:
                module.to(dtype)
    model.bolt_on.to(dtype)
    return model


def build_parts(
    recipe: Recipe, device: torch.device, progress: bool = True, commands: NextCommands = FROM_PYTHON
) -> RunParts:
    """The parts of the recipe's family (see logit_parts for the logits family); `progress`: show a bar while
    the teacher writes its answers; `commands`: what a missing cache or answers message offers to run."""
    if recipe.family == "logits":
        from recipe_runner.trainer.logit_parts import build_logit_parts

        return build_logit_parts(recipe, device, progress, commands)
    return _build_embedding_parts(recipe, device, commands)


def build_trained_model(recipe: Recipe, device: torch.device | str) -> nn.Module:
    """What training updates, with fresh weights, without the teacher's weights (an export loads a checkpoint in)."""
    if recipe.family == "logits":
        from recipe_runner.trainer.logit_parts import build_logits_model

        return build_logits_model(recipe, device)
    return build_distill_model(recipe, device, hidden_width(resolve_config(recipe.teacher)))


def _build_embedding_parts(recipe: Recipe, device: torch.device, commands: NextCommands) -> RunParts:
    """Real weights (or seeded random ones for inline configs); the teacher is skipped when fully cached."""
    seed = recipe.hardware.seed
    attention = recipe.hardware.attention
    student_tok = load_tokenizer(recipe.student)
    teacher_tok = load_tokenizer(recipe.teacher)
    train_prompts, eval_prompts = split_prompts(recipe)
    caches = {"train": open_cache(recipe, "train", train_prompts, commands)}
    caches["eval"] = open_cache(recipe, "eval", eval_prompts, commands) if eval_prompts else None
    fully_cached = caches["train"] is not None and (not eval_prompts or caches["eval"] is not None)
    if fully_cached:  # of the teacher only its width, and the final-norm weight a bolt-on layer may start from
        teacher = None
        model = build_distill_model(recipe, device, hidden_width(resolve_config(recipe.teacher)))
        if model.bolt_on.takes_teacher_norm:
            model.bolt_on.copy_teacher_norm(final_norm_weight(recipe.teacher, "teacher", seed))
    else:
        teacher = build_model(
            recipe.teacher,
            "teacher",
            device=device,
            attention=attention,
            seed=seed,
            fused_kernels=recipe.hardware.fused_kernels,
        )
        freeze(teacher)
        model = build_distill_model(recipe, device, hidden_width(teacher.config))
        model.bolt_on.init_from_teacher(teacher)
    aligner = CrossTokenizerAligner(recipe.alignment)

    def pairs(prompts: list[str], cache: CachedTeacher | None) -> PromptPairs:
        return PromptPairs(
            prompts, student_tok, teacher_tok, aligner, recipe.student.max_length, recipe.teacher.max_length, cache
        )

    hw = recipe.hardware
    return RunParts(
        model=model,
        checkpointing=StudentCheckpointing(model.student, hw.gradient_checkpointing, hw.checkpoint_min_tokens),
        teacher=teacher,
        student_tokenizer=student_tok,
        teacher_tokenizer=teacher_tok,
        train=pairs(train_prompts, caches["train"]),
        eval=pairs(eval_prompts, caches["eval"]) if eval_prompts else None,
        collate=Collator(pad_id(student_tok), pad_id(teacher_tok), recipe.teacher.chroma_mask),
    )

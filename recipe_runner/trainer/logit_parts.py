"""What a logits-family run trains and reads: a causal LM student, a frozen causal LM teacher and their tokenizers."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from components.alignment import CrossTokenizerAligner
from components.data.pipeline import Collator, PromptPairs, predicting_matches
from components.data.texts import TextCollator, TextSamples
from components.losses.logit_losses import FeatureKey, feature_keys
from components.losses.vocab_map import VocabMap, build_vocab_map
from components.models import build_model, freeze, hidden_width, load_tokenizer, pad_id
from components.models.checkpointing import StudentCheckpointing
from components.models.packed_attention import runs_packed, use_packed_attention
from components.packed_sequences import PackedSequences
from recipe_runner.next_commands import NextCommands
from recipe_runner.trainer.parts import as_input_of
from schemas import Recipe
from schemas.models import CausalLMStudent
from schemas.stages import DIVERGENCE_LOSSES, Stage


def _projection_name(key: FeatureKey) -> str:
    return f"{key[1]}_to_{key[2]}"


def _outputs(out, take: Callable[[torch.Tensor], torch.Tensor], key: tuple[str, int]) -> torch.Tensor:
    """One layer's output at the real tokens: hidden states [tokens, width], or the attention distributions over
    the keys averaged over heads [tokens, keys]."""
    kind, layer = key
    if kind == "hidden":
        return take(out.hidden_states[layer])
    return take(out.attentions[layer].mean(1))


def _bidirectional_mask(model: nn.Module, mask: torch.Tensor) -> torch.Tensor:
    """A padding-only [B, 1, L, L] attention mask in the form the model's attention implementation takes:
    transformers uses a prepared 4D mask as it is, instead of the causal one it would build (Qwen, Llama,
    Mistral and GPT-2 checked)."""
    from transformers.masking_utils import create_bidirectional_mask

    shape = torch.empty((*mask.shape, 1), dtype=model.get_input_embeddings().weight.dtype, device=mask.device)
    prepared = create_bidirectional_mask(
        config=model.config, inputs_embeds=shape, attention_mask=mask, allow_is_bidirectional_skip=False
    )
    return prepared


def _run(
    model: nn.Module,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    packing: PackedSequences | None,
    keys,
    bidirectional: bool = False,
    **kw,
):
    """The model's outputs and how to take its real tokens' rows from them, in the mask's order: a padded forward,
    or (when the model was switched to packed attention) one packed row of the real tokens only."""
    kinds = {key[0] for key in keys}
    asks = {"output_hidden_states": "hidden" in kinds, "output_attentions": "attention" in kinds, **kw}
    if not runs_packed(model):
        attention = _bidirectional_mask(model, mask) if bidirectional else mask.long()
        # With the collator's packing, the real rows are gathered by an index of known length: no device sync.
        take = packing.pack if packing is not None else (lambda tensor: tensor[mask])
        return model(input_ids=input_ids, attention_mask=attention, **asks), take
    packing = packing if packing is not None else PackedSequences.from_mask(mask)
    out = model(
        input_ids=packing.pack(input_ids)[None],
        position_ids=packing.positions[None],
        packed_sequences=packing,
        **asks,
    )
    return out, lambda tensor: tensor[0]


class LogitsModel(nn.Module):
    """The student, shaped as the embedding family's DistillModel (a `student` and an empty `bolt_on`) so that
    stages, LoRA, the optimizer's parts and checkpoints treat both families alike; plus the projections of
    hidden_states losses, which train with the student and stay out of the export."""

    def __init__(
        self, student: nn.Module, projections: nn.ModuleDict | None = None, bidirectional: bool = False
    ) -> None:
        super().__init__()
        if getattr(student.config, "use_cache", None):
            student.config.use_cache = False  # a KV cache is for generation; in training it only costs memory
        self.bidirectional = bidirectional
        if bidirectional:  # read by the packed kernel; the padded path gets padding-only masks (see _run)
            for module in student.modules():
                if hasattr(module, "is_causal"):
                    module.is_causal = False
        self.student = student
        self.bolt_on = nn.ModuleList()
        self.projections = projections if projections is not None else nn.ModuleDict()
        self.packed = False

    def student_side(self) -> list[nn.Module]:
        """What trains as the `student` part."""
        return [self.student, self.projections]

    def train_extras(self, stage: Stage) -> None:
        """Projections train with the student, in the stages whose losses read them: one left trainable but unused
        would stop a DDP run, which expects a gradient for every trainable parameter."""
        used = {_projection_name(key) for key in feature_keys(stage.losses) if key[0] == "hidden"}
        for name, projection in self.projections.items():
            projection.requires_grad_("student" in stage.trainable and name in used)

    def use_packed_sequences(self) -> None:
        """From now on every forward packs the real tokens into one row (see components.packed_sequences)."""
        use_packed_attention(self.student)
        self.packed = True

    def forward(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor,
        keys: tuple[FeatureKey, ...] = (),
        packing: PackedSequences | None = None,
    ):
        """[B, L] ids and bool mask -> logits of the real tokens, [tokens, vocabulary], in the mask's order; with
        feature `keys`, also the student's side of each (hidden states projected where the widths differ, or
        attention distributions), a tuple in the order of `keys`. `packing`: the collator's PackedSequences of
        `mask` (computed here when missing), used when the student runs packed."""
        out, take = _run(self.student, input_ids, mask, packing, keys, self.bidirectional)
        logits = take(out.logits)
        if not keys:
            return logits
        sides = []
        for key in keys:
            rows = _outputs(out, take, (key[0], key[1]))
            name = _projection_name(key)
            if key[0] == "hidden" and name in self.projections:
                rows = self.projections[name](as_input_of(self.projections[name], rows))
            sides.append(rows)
        return logits, tuple(sides)


@torch.no_grad()
def teacher_logits(
    teacher: nn.Module,
    input_ids: torch.Tensor,
    mask: torch.Tensor,
    keys: tuple[tuple[str, int], ...] = (),
    packing: PackedSequences | None = None,
):
    """The teacher's logits of the real tokens, in the order LogitsModel gives the student's; with `keys`
    ((kind, teacher layer) pairs), also a dict of those outputs at the same tokens."""
    out, take = _run(teacher, input_ids, mask, packing, keys, use_cache=False)
    if not keys:
        return take(out.logits)
    return take(out.logits), {key: _outputs(out, take, key) for key in keys}


def build_projections(recipe: Recipe, student_width: int) -> nn.ModuleDict:
    """One linear map per layer pair of the recipe's hidden_states losses, where the widths differ (seeded)."""
    from components.models import hidden_width, resolve_config

    keys = [
        key for key in feature_keys([loss for stage in recipe.stages for loss in stage.losses]) if key[0] == "hidden"
    ]
    teacher_width = hidden_width(resolve_config(recipe.teacher)) if keys else student_width
    projections = nn.ModuleDict()
    if teacher_width == student_width:
        return projections
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.hardware.seed)
        for key in keys:
            projections[_projection_name(key)] = nn.Linear(student_width, teacher_width, bias=False)
    return projections


def teacher_seed(recipe: Recipe) -> int:
    """An inline teacher of the student's architecture must not start as its twin: it gets the next seed."""
    return recipe.hardware.seed + 1


def build_logits_model(recipe: Recipe, device: torch.device | str) -> LogitsModel:
    """The student as training builds it (the export rebuilds from a checkpoint with it)."""
    from recipe_runner.trainer.parts import set_trained_dtype

    hw = recipe.hardware
    student = build_model(
        recipe.student, "student", device=device, attention=hw.attention, seed=hw.seed, fused_kernels=hw.fused_kernels
    )
    projections = build_projections(recipe, hidden_width(student.config)).to(device)
    bidirectional = isinstance(recipe.student, CausalLMStudent) and recipe.student.bidirectional
    return set_trained_dtype(LogitsModel(student, projections, bidirectional), recipe)


def needs_vocab_map(recipe: Recipe) -> bool:
    """Whether a stage compares the distributions of two vocabularies id by id (a divergence with alignment)."""
    divergences = any(isinstance(loss, DIVERGENCE_LOSSES) for stage in recipe.stages for loss in stage.losses)
    return recipe.alignment is not None and divergences


def shared_vocabulary(recipe: Recipe, tokenizer, teacher_tokenizer) -> VocabMap | None:
    """The ids both tokenizers share, when a stage compares the two vocabularies' distributions id by id."""
    from recipe_runner.trainer.parts import RunSetupError

    if not needs_vocab_map(recipe):
        return None
    vocab_map = build_vocab_map(tokenizer, teacher_tokenizer)
    if not vocab_map.shared:  # `validate` names the losses, where both tokenizers load offline
        raise RunSetupError(
            "the student's and the teacher's tokenizers share no token, so forward_kl, reverse_kl and jsd have "
            "nothing to compare across them: use the uld loss, which needs no shared tokens"
        )
    return vocab_map


def _refuse_no_pairs(train: PromptPairs, collate: Collator, commands: NextCommands, count: int = 64) -> None:
    """A run whose teacher terms would compare nothing stops before it loads anything more: checked on its first
    texts, which the aligner pairs in milliseconds."""
    from recipe_runner.trainer.parts import RunSetupError

    batch = collate([train[index] for index in range(min(count, len(train)))])
    if not predicting_matches(batch).any():
        where = "the answers of " if train.answers is not None else ""
        raise RunSetupError(
            f"the aligner paired no token of the student's with one of the teacher's in {where}the first "
            f"{len(batch.indices)} training texts, so uld and the divergences would compare nothing: "
            f"`{commands.command('align-report')}` shows how the two tokenizers split the texts"
        )


def build_logit_parts(recipe: Recipe, device: torch.device, progress: bool, commands: NextCommands):
    """Real weights (or seeded random ones for inline configs). The teacher runs beside the student, on the same
    tokens or (with `alignment`) its own; with `answers` it first answers the prompts, and is not kept for
    training when only cross-entropy reads those answers."""
    from recipe_runner.family_checks import ACROSS_LOSSES, teacher_in_training
    from recipe_runner.teacher_answers import teacher_answers
    from recipe_runner.trainer.parts import RunParts, RunSetupError, split_prompts

    hw = recipe.hardware
    tokenizer, teacher_tokenizer = load_tokenizer(recipe.student), load_tokenizer(recipe.teacher)
    across = recipe.alignment is not None  # two vocabularies, compared at aligned positions
    reads_teacher = teacher_in_training(recipe)
    if reads_teacher and not across and tokenizer.get_vocab() != teacher_tokenizer.get_vocab():
        raise RunSetupError(  # `validate` says so too, where both tokenizers load offline
            f"the teacher's tokenizer is not the student's: add `alignment: {{type: cross_tokenizer}}` "
            f"{ACROSS_LOSSES}, or give both models the same tokenizer"
        )
    train_texts, eval_texts = split_prompts(recipe)
    answers: dict[str, list[str] | None] = {"train": None, "eval": None}
    if recipe.teacher.answers is not None:
        splits = {"train": train_texts, **({"eval": eval_texts} if eval_texts else {})}
        answers.update(teacher_answers(recipe, splits, device, progress, commands))
    length = recipe.student.max_length
    if across:
        aligner = CrossTokenizerAligner(recipe.alignment)

        def samples(texts: list[str], split: str) -> PromptPairs:
            return PromptPairs(
                texts, tokenizer, teacher_tokenizer, aligner, length, recipe.teacher.max_length, answers=answers[split]
            )

        collate: Collator | TextCollator = Collator(pad_id(tokenizer), pad_id(teacher_tokenizer), False)
        vocab_map = shared_vocabulary(recipe, tokenizer, teacher_tokenizer)
    else:

        def samples(texts: list[str], split: str) -> TextSamples:
            return TextSamples(texts, tokenizer, length, answers[split])

        collate = TextCollator(pad_id(tokenizer))
        vocab_map = None
    train = samples(train_texts, "train")
    if across:
        _refuse_no_pairs(train, collate, commands)
    teacher = None
    if reads_teacher:
        teacher = build_model(
            recipe.teacher,
            "teacher",
            device=device,
            attention=hw.attention,
            seed=teacher_seed(recipe),
            fused_kernels=hw.fused_kernels,
        )
    model = build_logits_model(recipe, device)
    return RunParts(
        model=model,
        checkpointing=StudentCheckpointing(model.student, hw.gradient_checkpointing, hw.checkpoint_min_tokens),
        teacher=freeze(teacher) if teacher is not None else None,
        student_tokenizer=tokenizer,
        teacher_tokenizer=teacher_tokenizer,
        train=train,
        eval=samples(eval_texts, "eval") if eval_texts else None,
        collate=collate,
        vocab_map=vocab_map,
    )

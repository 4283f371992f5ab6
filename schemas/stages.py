"""Training stages: what trains, how fast, and against which weighted losses."""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BeforeValidator, ConfigDict, Field, field_validator, model_validator

from schemas.alignment import Tier
from schemas.base import StrictModel

Beta = Annotated[float, Field(ge=0, lt=1)]

Part = Literal["student", "bolt_on"]
PARTS: tuple[Part, ...] = ("student", "bolt_on")


class PerPart(StrictModel):
    """A value per trainable part; a part left out falls back to the stage-wide rule."""

    student: float | None = Field(default=None, ge=0, description="Value for the student (or its LoRA adapters).")
    bolt_on: float | None = Field(default=None, ge=0, description="Value for the bolt-on layers.")

    def get(self, part: Part) -> float | None:
        return getattr(self, part)


_ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")  # their names in Llama, Qwen and Mistral


class LoRA(StrictModel):
    """Train low-rank adapters of the student instead of its full weights (peft)."""

    r: int = Field(default=16, gt=0, description="Adapter rank.")
    alpha: float = Field(default=32.0, gt=0, description="Adapter scaling numerator (scale = alpha / r).")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the adapter input.")
    target_modules: list[str] = Field(
        default_factory=lambda: list(_ATTENTION_PROJECTIONS),
        min_length=1,
        description="Module names (suffixes) that receive adapters (default: the attention projections q_proj, "
        "k_proj, v_proj, o_proj).",
        json_schema_extra={"default": list(_ATTENTION_PROJECTIONS)},
    )


class AdamW(StrictModel):
    """AdamW with decoupled weight decay."""

    type: Literal["adamw"] = Field(description="Optimizer kind.")
    weight_decay: float = Field(default=0.01, ge=0, description="Decoupled weight decay.")
    betas: tuple[Beta, Beta] = Field(default=(0.9, 0.999), description="Adam beta1 and beta2, each in [0, 1).")
    eps: float = Field(default=1e-8, gt=0, description="Adam epsilon.")
    fused: bool | None = Field(
        default=None,
        description="One fused kernel for the whole update; null uses it on CUDA and CPU (torch's fused AdamW), "
        "false keeps torch's default of a few small ops per tensor.",
    )


Optimizer = Annotated[Union[AdamW], Field(discriminator="type")]


class ConstantSchedule(StrictModel):
    """Constant learning rate after warmup."""

    type: Literal["constant"] = Field(description="Schedule kind.")


class LinearSchedule(StrictModel):
    """Linear decay from lr to min_lr over the stage."""

    type: Literal["linear"] = Field(description="Schedule kind.")


class CosineSchedule(StrictModel):
    """One cosine from lr down to min_lr over the stage."""

    type: Literal["cosine"] = Field(description="Schedule kind.")


class CosineRestartsSchedule(StrictModel):
    """Cosine from lr to min_lr, restarting every cycle (SGDR)."""

    type: Literal["cosine_restarts"] = Field(description="Schedule kind.")
    cycle_steps: int = Field(gt=0, description="Optimizer steps in the first cycle.")
    cycle_mult: float = Field(default=1.0, ge=1, description="Each cycle is this many times longer than the last.")


Schedule = Annotated[
    Union[ConstantSchedule, LinearSchedule, CosineSchedule, CosineRestartsSchedule], Field(discriminator="type")
]


class TierLoss(StrictModel):
    """What every loss of the embedding family has: the tier it compares and its weight (the base of a loss type
    that a package adds, see `components.registry`)."""

    on: Tier = Field(description="Alignment tier the loss compares.")
    weight: float = Field(default=1.0, ge=0, description="Multiplier of this term in the stage loss.")


class HuberLoss(TierLoss):
    """Smooth L1 between aligned student and teacher vectors."""

    type: Literal["huber"] = Field(description="Loss kind.")
    delta: float = Field(default=1.0, gt=0, description="Point where the loss turns from quadratic to linear.")


class CosineLoss(TierLoss):
    """1 - cosine similarity of aligned vectors."""

    type: Literal["cosine"] = Field(description="Loss kind.")


class MSELoss(TierLoss):
    """Mean squared error of aligned vectors."""

    type: Literal["mse"] = Field(description="Loss kind.")


class _LogitLoss(StrictModel):
    weight: float = Field(default=1.0, ge=0, description="Multiplier of this term in the stage loss.")


class DivergenceLoss(_LogitLoss):
    """What every divergence between the two next-token distributions has (forward_kl, reverse_kl, jsd, and
    those a package adds, see `components.registry`): a temperature, fixed or dynamic, and a weight."""

    temperature: float = Field(
        default=1.0,
        gt=0,
        description="Both distributions are softened by dividing the logits by it; the term is multiplied by "
        "its square so that gradients keep their scale (Hinton et al.).",
    )
    dynamic_temperature: bool = Field(
        default=False,
        description="Give each token a student temperature that makes the spread (standard deviation) of its "
        "logits the teacher's at `temperature`: the teacher's softened distribution stays the target, and the "
        "student is compared by the shape of its logits, not their scale, which its pretraining or a "
        "cross_entropy loss sets (dynamic temperature, after logit standardization).",
    )


class ForwardKLLoss(DivergenceLoss):
    """KL(teacher || student) per real token: the student covers every token the teacher finds likely."""

    type: Literal["forward_kl"] = Field(description="Loss kind.")


class ReverseKLLoss(DivergenceLoss):
    """KL(student || teacher) per real token: the student concentrates on the teacher's main modes."""

    type: Literal["reverse_kl"] = Field(description="Loss kind.")


class JSDLoss(DivergenceLoss):
    """Generalised Jensen-Shannon divergence per real token, between forward (beta near 0) and reverse (near 1) KL."""

    type: Literal["jsd"] = Field(description="Loss kind.")
    beta: float = Field(
        default=0.5,
        gt=0,
        lt=1,
        description="Mixture weight m = beta * teacher + (1 - beta) * student; 0.5 is the symmetric JSD.",
    )


class ULDLoss(_LogitLoss):
    """Universal Logit Distillation across two vocabularies: L1 distance of the sorted next-token probabilities,
    at positions before tokens the alignment matched (needs `alignment`; logits family)."""

    type: Literal["uld"] = Field(description="Loss kind.")
    temperature: float = Field(
        default=1.0, gt=0, description="Both distributions are softened by dividing the logits by it (no T² factor)."
    )


def _whole_layer_numbers(mapping: Any) -> Any:
    """`{true: 3}` or `{1.0: 3}` would be read as layer 1: a yes/no or a decimal is a typo for a layer index."""

    def written(item: Any) -> str:
        return str(item).lower() if isinstance(item, bool) else str(item)

    if isinstance(mapping, dict):
        for key, value in mapping.items():
            for item in (key, value):
                if isinstance(item, (bool, float)):
                    raise ValueError(
                        f"layer indices are whole numbers, got {written(item)} in "
                        f"{{{written(key)}: {written(value)}}}: write e.g. {{1: 3}}"
                    )
    return mapping


LayerMap = Annotated[dict[int, int], BeforeValidator(_whole_layer_numbers)]


class HiddenStatesLoss(_LogitLoss):
    """Feature distillation: the distance between student and teacher hidden states at mapped layers, per real
    token. Where the widths differ, a linear projection of the student's states (trained with the student, left
    out of the export) maps them to the teacher's width."""

    type: Literal["hidden_states"] = Field(description="Loss kind.")
    layers: LayerMap = Field(
        min_length=1,
        description="Student hidden-state index -> teacher hidden-state index (0 the embeddings, i the output of "
        "layer i; the last, i = the number of layers or -1, is after the final norm), e.g. {7: 14, 14: 28} for a "
        "student of half the depth.",
    )
    distance: Literal["mse", "cosine"] = Field(
        default="mse", description="mse of the vectors, or 1 - their cosine similarity; averaged over the layers."
    )


class AttentionLoss(_LogitLoss):
    """Attention-map distillation (MiniLM-style): KL(teacher || student) between the attention distributions of
    mapped layers, averaged over heads (so head counts may differ), per real query token. Needs
    hardware.attention: eager, the one implementation that returns attention maps."""

    type: Literal["attention"] = Field(description="Loss kind.")
    layers: LayerMap = Field(
        min_length=1,
        description="Student layer -> teacher layer (0 the first, -1 the last), e.g. {-1: -1} for the last ones.",
    )


class CrossEntropyLoss(_LogitLoss):
    """Next-token cross-entropy of the student on the training text itself (the hard labels)."""

    type: Literal["cross_entropy"] = Field(description="Loss kind.")


Loss = Annotated[
    Union[
        HuberLoss,
        CosineLoss,
        MSELoss,
        ForwardKLLoss,
        ReverseKLLoss,
        JSDLoss,
        CrossEntropyLoss,
        HiddenStatesLoss,
        AttentionLoss,
        ULDLoss,
    ],
    Field(discriminator="type"),
]
LogitLoss = Union[ForwardKLLoss, ReverseKLLoss, JSDLoss, CrossEntropyLoss, HiddenStatesLoss, AttentionLoss, ULDLoss]
VECTOR_LOSSES = (HuberLoss, CosineLoss, MSELoss)
LOGIT_LOSSES = (DivergenceLoss, CrossEntropyLoss, HiddenStatesLoss, AttentionLoss, ULDLoss)
FEATURE_LOSSES = (HiddenStatesLoss, AttentionLoss)
DIVERGENCE_LOSSES = (DivergenceLoss,)


class OnPolicy(StrictModel):
    """On-policy distillation (GKD, Agarwal et al. 2024): the student continues a share of the training texts
    with its own samples, and the stage's divergences compare teacher and student on those sampled tokens, where
    a student trained only on fixed text never learns from its own mistakes (logits family)."""

    fraction: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="Share of micro-batches the student continues (GKD's lambda); the others train on the text as "
        "it is. Cross-entropy applies to those only: on a sample it would teach the student its own output.",
    )
    max_new_tokens: int = Field(
        default=64,
        gt=0,
        description="Tokens the student samples after each text; the text is cut so that both fit student.max_length.",
    )
    temperature: float = Field(default=1.0, gt=0, description="Sampling temperature of the student's continuations.")


class SpanDenoiser(StrictModel):
    """`density` of each text masked in spans of `span` tokens on average, laid out at random with kept tokens
    between them (as T5 draws them): UL2's R-denoiser (short spans, low density) or X-denoiser (long spans or a
    high density)."""

    type: Literal["spans"] = Field(description="Denoiser kind.")
    density: float = Field(
        default=0.15,
        gt=0,
        lt=1,
        description="Share of each text's tokens masked (rounded; at least one, the first token never).",
    )
    span: int = Field(
        default=3, gt=0, description="Mean tokens per masked span (a text shorter than it gets one span)."
    )
    share: float = Field(default=1.0, gt=0, description="Relative frequency of this denoiser among the texts.")


class SuffixDenoiser(StrictModel):
    """The end of each text masked as one span, every masked token predicted at once from the text before it
    (read both ways) and the mask tokens: UL2's S-denoiser in masked form, not its autoregressive prefix LM."""

    type: Literal["suffix"] = Field(description="Denoiser kind.")
    fraction: float = Field(
        default=0.25, gt=0, lt=1, description="Share of each text's real tokens masked at its end (at least one)."
    )
    share: float = Field(default=1.0, gt=0, description="Relative frequency of this denoiser among the texts.")


Denoiser = Annotated[Union[SpanDenoiser, SuffixDenoiser], Field(discriminator="type")]


class Denoising(StrictModel):
    """UL2-style span corruption (logits family), to turn a causal LM into a bidirectional encoder: spans of each
    text are written over with a mask token, the student reads the corrupted text with `student.bidirectional`
    attention, and the losses are scored where the next token was masked (masked next-token prediction, so the
    LM head keeps its meaning). The teacher reads the clean text, causally, and predicts the same tokens."""

    density: float = Field(
        default=0.15,
        gt=0,
        lt=1,
        description="Share of each text's tokens masked (rounded; at least one; without `mixture`).",
    )
    span: int = Field(default=3, gt=0, description="Mean tokens per masked span (without `mixture`).")
    mixture: list[Denoiser] | None = Field(
        default=None,
        min_length=1,
        description="UL2's mixture of denoisers instead of one: each text is corrupted by one of them, drawn by "
        "their shares, e.g. [{type: spans, span: 3, density: 0.15, share: 2}, {type: spans, span: 32, density: "
        "0.5}, {type: suffix, fraction: 0.25}] for R, X and S.",
    )
    mask_token: str | None = Field(
        default=None,
        description="The token written over masked spans (one token of the student's tokenizer); default its mask "
        "token, else its pad token.",
    )

    @model_validator(mode="after")
    def _one_way(self) -> Denoising:
        # Compared with the defaults rather than by which fields were given: `recipe show` writes them all out.
        defaults = (type(self).model_fields["density"].default, type(self).model_fields["span"].default)
        if self.mixture is not None and (self.density, self.span) != defaults:
            raise ValueError("give either density and span (one denoiser) or mixture, not both")
        return self

    @property
    def denoisers(self) -> list[SpanDenoiser | SuffixDenoiser]:
        """The denoisers texts are drawn among: the mixture, or the one that density and span describe."""
        if self.mixture is not None:
            return self.mixture
        return [SpanDenoiser(type="spans", density=self.density, span=self.span)]


# What the model validator `_length` says, in JSON Schema for editors: one of `epochs` and `steps`, not both.
_EPOCHS_OR_STEPS = {
    "anyOf": [
        {"properties": {"epochs": {"type": "number"}}, "required": ["epochs"]},
        {"properties": {"steps": {"type": "integer"}}, "required": ["steps"]},
    ],
    "not": {
        "properties": {"epochs": {"type": "number"}, "steps": {"type": "integer"}},
        "required": ["epochs", "steps"],
    },
}


class Stage(StrictModel):
    """One training phase; stages run in order, each with its own trainable parts and losses."""

    model_config = ConfigDict(json_schema_extra=_EPOCHS_OR_STEPS)

    name: str = Field(min_length=1, description="Stage name, used in logs and checkpoint names.")
    epochs: float | None = Field(default=None, gt=0, description="Passes over the training data.")
    steps: int | None = Field(default=None, gt=0, description="Optimizer steps (instead of epochs).")
    trainable: list[Part] = Field(
        min_length=1, description="Parts whose weights this stage updates.", json_schema_extra={"uniqueItems": True}
    )
    student_lora: LoRA | None = Field(default=None, description="Train the student through LoRA adapters.")
    lr: PerPart = Field(description="Peak learning rate per trainable part.")
    min_lr: PerPart = Field(default_factory=PerPart, description="Floor of the schedule per part (default lr/10).")
    optimizer: Optimizer = Field(
        default_factory=lambda: AdamW(type="adamw"),
        description="Optimizer (default: adamw with its defaults).",
        json_schema_extra={"default": {"type": "adamw"}},
    )
    schedule: Schedule = Field(
        default_factory=lambda: ConstantSchedule(type="constant"),
        description="Learning-rate schedule (default: constant).",
        json_schema_extra={"default": {"type": "constant"}},
    )
    warmup_steps: int = Field(default=0, ge=0, description="Linear warmup from 0 to lr.")
    grad_clip: float | None = Field(default=1.0, gt=0, description="Clip the global gradient norm; null disables.")
    losses: list[Loss] = Field(min_length=1, description="Weighted loss terms summed into the stage loss.")
    on_policy: OnPolicy | None = Field(
        default=None, description="Train on the student's own continuations of the texts (logits family)."
    )
    denoising: Denoising | None = Field(
        default=None, description="Train on span-corrupted texts (logits family, a bidirectional student)."
    )

    @field_validator("trainable")
    @classmethod
    def _each_part_once(cls, parts: list[Part]) -> list[Part]:
        twice = sorted({part for part in parts if parts.count(part) > 1})
        if twice:
            raise ValueError(f"{', '.join(twice)} is named more than once: name each part once")
        return parts

    @model_validator(mode="after")
    def _length(self) -> Stage:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError(
                "give exactly one of `epochs` and `steps`: remove the other (set it to null where it is inherited)"
            )
        return self

    def min_lr_for(self, part: Part) -> float:
        explicit = self.min_lr.get(part)
        return explicit if explicit is not None else default_min_lr(self.lr.get(part) or 0.0)


def default_min_lr(lr: float) -> float:
    """The schedule's floor for a part whose min_lr is not given."""
    return lr / 10

"""Peak training memory of one stage on one device, from parameter counts and shapes (no allocation).

Formula (bytes; b = hardware.batch_size, s = max_length, a = activation bytes: 2 for bf16/fp16, 4 for fp32):
  frozen weights     teacher params x teacher dtype (0 with `teacher.cache`: targets come from disk);
                     student params x student dtype when the student is frozen or trained through LoRA;
                     bolt-on params x 4 (x 2 with bf16_stochastic) when the stage does not train it
  trainable state    16 x trainable params: fp32 master weight 4 + fp32 grad 4 + AdamW exp_avg 4 + exp_avg_sq 4;
                     8 with trained_weights bf16_stochastic (bf16 weight, grad and both moments)
  student acts       b x s x L x (10 h + 3 f) x a      (h hidden, f MLP width, L layers; SDPA keeps no s x s scores;
                                                         10 h: norms, q/k/v/o inputs and outputs; 3 f: gate, up, act)
                     with gradient_checkpointing: b x s x L x h x a (layer inputs) + one layer's worth;
                     with checkpoint_min_tokens T as well: the larger of that and T - 1 tokens unrecomputed;
                     a stage that trains only the bolt-on runs the student without grad: one layer's worth
  bolt-on acts       b x s x a x per-token elements: a projection keeps in + 3 out (input, pre-activation, norm,
                     dropout), a transformer block 10 d + 2 f, a residual MLP 2 d + 2 h, an RMSNorm d, the skip in
  teacher forward    without a cache, one T5 layer under no_grad: b x s x (6 d + 3 f) x a plus the relative-position
                     bias and scores b x heads x s^2 x a x 2; its targets b x s x d x a stay for the loss
  loss buffers       b x s x teacher width x 4 x 2 (fp32 output and its gradient)
  runtime            1 GiB for the CUDA context, cuBLAS workspace and allocator slack
The budget `hardware.vram_gb` is read as GiB. Against `recipe bench` on an H100 (peaks over 20 timed
length-distributed batches, not every prompt at max_length): reference 20.8 estimated / 18.57 measured,
bf16_stochastic 13.3 / 11.19, but without checkpointing 28.4 / 35.2, so the per-token activations of an
uncheckpointed student are larger than 10 h + 3 f. Use it to compare configurations and to catch recipes that
cannot fit, not as a guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from transformers import PretrainedConfig

from components.bolt_on import width_chain
from schemas import Recipe
from schemas.bolt_on import LinearLayer, MLPLayer, ResidualMLPLayer, TransformerLayer
from schemas.stages import Stage

GIB = 1 << 30
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_RUNTIME_BYTES = GIB


@dataclass(frozen=True)
class StackShape:
    """Depth and widths of a transformer stack: what its activations scale with."""

    layers: int
    hidden: int
    ffn: int
    heads: int

    @classmethod
    def of(cls, config: PretrainedConfig) -> StackShape:
        def first(*names: str) -> int:
            for name in names:
                value = getattr(config, name, None)
                if isinstance(value, int):
                    return value
            raise ValueError(f"{type(config).__name__} has none of {names}")

        return cls(
            layers=first("num_hidden_layers", "num_layers"),
            hidden=first("d_model", "hidden_size"),
            ffn=first("intermediate_size", "d_ff", "ffn_dim"),
            heads=first("num_attention_heads", "num_heads"),
        )


@dataclass(frozen=True)
class Sizes:
    """Parameter counts and shapes of the three components, as built on the meta device."""

    teacher_params: int
    teacher: StackShape
    student_params: int
    student: StackShape
    bolt_on_params: int


@dataclass(frozen=True)
class MemoryItem:
    label: str
    bytes: int


@dataclass(frozen=True)
class MemoryEstimate:
    """Itemised peak estimate of one stage and the budget it is checked against."""

    stage: str
    items: tuple[MemoryItem, ...]
    budget_gb: float | None

    @property
    def total_bytes(self) -> int:
        return sum(item.bytes for item in self.items)

    @property
    def total_gib(self) -> float:
        return self.total_bytes / GIB

    @property
    def over_budget(self) -> bool:
        return self.budget_gb is not None and self.total_gib > self.budget_gb


def _bolt_on_elements(recipe: Recipe, in_width: int) -> int:
    """Activation elements per token that the bolt-on keeps for its backward pass."""
    total = in_width if recipe.bolt_on.skip is not None else 0
    for layer, (_, width, out_width) in zip(recipe.bolt_on.layers, width_chain(recipe.bolt_on, in_width), strict=True):
        if isinstance(layer, LinearLayer):
            total += width + 3 * out_width
        elif isinstance(layer, MLPLayer):
            widths = [width, *layer.hidden_dims]
            total += sum(a + 3 * b for a, b in pairwise(widths)) + widths[-1] + 2 * out_width
        elif isinstance(layer, TransformerLayer):
            total += layer.layers * (10 * layer.dim + 2 * layer.ffn_dim)
        elif isinstance(layer, ResidualMLPLayer):
            total += 2 * width + 2 * layer.hidden_dim
        else:
            total += width
    return total


def estimate_memory(recipe: Recipe, stage: Stage, sizes: Sizes, student_trainable: int) -> MemoryEstimate:
    """Itemised peak memory of `stage`; `student_trainable` is the student's (or its LoRA adapters') trainable count."""
    hardware = recipe.hardware
    a = 4 if hardware.precision == "fp32" else 2
    b = hardware.batch_size
    s_student = recipe.student.max_length
    s_teacher = recipe.teacher.max_length
    trains_student = "student" in stage.trainable
    trains_bolt_on = "bolt_on" in stage.trainable
    lora = trains_student and stage.student_lora is not None
    items: list[MemoryItem] = []

    if recipe.teacher.cache is None:
        items.append(MemoryItem("teacher weights (frozen)", sizes.teacher_params * _DTYPE_BYTES[recipe.teacher.dtype]))
    if not trains_student or lora:
        items.append(MemoryItem("student weights (frozen)", sizes.student_params * _DTYPE_BYTES[recipe.student.dtype]))
    if not trains_bolt_on:
        bf16 = hardware.trained_weights == "bf16_stochastic"
        label = f"bolt-on weights (frozen, {'bf16' if bf16 else 'fp32'})"
        items.append(MemoryItem(label, sizes.bolt_on_params * (2 if bf16 else 4)))
    trainable = (student_trainable if trains_student else 0) + (sizes.bolt_on_params if trains_bolt_on else 0)
    if hardware.trained_weights == "bf16_stochastic":
        items.append(MemoryItem("trainable: bf16 weights + grads + AdamW states (8 B/param)", 8 * trainable))
    else:
        items.append(MemoryItem("trainable: fp32 weights + grads + AdamW states (16 B/param)", 16 * trainable))

    st = sizes.student
    per_layer = b * s_student * (10 * st.hidden + 3 * st.ffn) * a
    if not trains_student:
        items.append(MemoryItem("student activations (no grad, one layer)", per_layer))
    elif hardware.gradient_checkpointing:
        checkpointed = b * s_student * st.layers * st.hidden * a + per_layer
        threshold = hardware.checkpoint_min_tokens
        unrecomputed = (
            0 if threshold is None else min(b * s_student, threshold - 1) * st.layers * per_layer // (b * s_student)
        )
        if unrecomputed > checkpointed:
            label = f"student activations (batches under {threshold} tokens, not recomputed)"
            items.append(MemoryItem(label, unrecomputed))
        else:
            items.append(MemoryItem("student activations (checkpointed)", checkpointed))
    else:
        items.append(MemoryItem("student activations", st.layers * per_layer))
    items.append(MemoryItem("bolt-on activations", b * s_student * a * _bolt_on_elements(recipe, st.hidden)))

    te = sizes.teacher
    if recipe.teacher.cache is None:
        forward = b * s_teacher * (6 * te.hidden + 3 * te.ffn) * a + 2 * b * te.heads * s_teacher**2 * a
        items.append(MemoryItem("teacher forward (one layer, no grad)", forward))
    target_bytes = _DTYPE_BYTES[recipe.teacher.cache.dtype if recipe.teacher.cache else recipe.teacher.dtype]
    items.append(MemoryItem("teacher targets", b * s_teacher * te.hidden * target_bytes))
    items.append(MemoryItem("loss buffers (fp32 output + grad)", b * s_student * te.hidden * 4 * 2))
    items.append(MemoryItem("runtime (CUDA context, workspace)", _RUNTIME_BYTES))
    return MemoryEstimate(stage.name, tuple(items), hardware.vram_gb)

"""Peak training memory of one stage on one device, from parameter counts and shapes (no allocation).

Formula (bytes; b x s = the padded tokens of the largest micro-batch: hardware.batch_size x max_length, or at
most hardware.batch_tokens; a = activation bytes: 2 for bf16/fp16, 4 for fp32):
  frozen weights     teacher params x teacher dtype (0 with `teacher.cache`: targets come from disk);
                     student params x the dtype it is held in, when the stage freezes it or trains it through
                     LoRA: the trained dtype (4, or 2 with bf16_stochastic) if any stage trains the student
                     (training casts it once for the whole run), else `student.dtype`;
                     bolt-on params x 4 (x 2 with bf16_stochastic) when the stage does not train it
  trainable state    16 x trainable params: fp32 master weight 4 + fp32 grad 4 + AdamW exp_avg 4 + exp_avg_sq 4;
                     8 with trained_weights bf16_stochastic (bf16 weight, grad and both moments)
  student acts       per token and layer, with r the residual-stream bytes (4 when fp32 weights run under
                     autocast, else a): 2 (4 + r) h (two RMSNorms: float32 input and normalised input)
                     + 2 h a, or 5 h a when r != a (linear inputs: the norm outputs, or the copies autocast makes
                     for q, k, v, gate and up) + (2 q + 2 kv) a (attention q, k, v and o_proj's input)
                     + 4 f a (gate, SiLU, up, product) + (4 + a)(q + kv) with per-head q/k norms, plus 4-byte
                     statistics (1/rms, softmax log-sum-exp); h hidden, q = heads x head_dim, kv = kv heads x
                     head_dim, f MLP width; SDPA keeps no s x s scores. Times b x s x L, plus the final norm.
                     transformers' eager norms keep exactly this (tests/recipe_runner/test_memory.py counts the
                     saved tensors on a CPU; Qwen3-0.6B: 2253 KiB per token estimated and counted); torch's fused
                     RMSNorm on CUDA keeps less. With gradient_checkpointing: b x s x L x h x r (layer inputs) +
                     one layer; with checkpoint_min_tokens T as well: the larger of that and T - 1 tokens
                     unrecomputed; a stage that trains only the bolt-on runs the student without grad: one layer
  bolt-on acts       b x s x a x per-token elements: a projection keeps in + 3 out (input, pre-activation, norm,
                     dropout), a transformer block 10 d + 2 f, a residual MLP 2 d + 2 h, an RMSNorm d, the skip in
  teacher forward    without a cache, one T5 layer under no_grad: b x s x (6 d + 3 f) x a plus the relative-position
                     bias and scores (b x s) x heads x s x a x 2; its targets b x s x d x a stay for the loss
  loss buffers       b x s x teacher width x 4 x 2 (fp32 output and its gradient)
  logits family      no bolt-on, no cache; teacher forward as above without T5's position bias; with hidden_states
                     losses the teacher's states of every layer b x s x d x (L + 1) x a (transformers returns them
                     all), with attention losses its maps b x s x s x heads x L x a; teacher logits
                     b x s x teacher vocab x a; student logits and their gradient 2 x b x s x student vocab x a;
                     the loss's float32 work on one chunk of rows (2^25 elements) x 6 (both logits, both log-softmaxes,
                     the probabilities and the product), recomputed in backward rather than kept; across two
                     vocabularies (alignment) also the rows gathered at aligned positions b x s x (both vocabs) x a
  eager attention    the student keeps every layer's scores for backward: b x s x s x heads x L x a x 2 (one
                     layer's when checkpointed, unless an attention loss has all of them returned)
  runtime            1 GiB for the CUDA context, cuBLAS workspace and allocator slack
Under DDP the gradients are views into its all-reduce buckets (gradient_as_bucket_view), so no term is added.
The budget `hardware.vram_gb` is read as GiB. Against `recipe bench` on an H100 (peaks over 20 timed
length-distributed batches, not every prompt at max_length; eager norms): reference 21.6 estimated / 18.57
measured, bf16_stochastic 13.6 / 11.19, without checkpointing 37.7 / 35.2 (the earlier per-layer term 10 h + 3 f
gave 28.4 there: it counted half of what an uncheckpointed Qwen3 layer keeps). Use it to compare configurations
and to catch recipes that cannot fit, not as a guarantee.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

from torch import nn

from components.bolt_on import width_chain
from components.losses.logit_losses import CHUNK_ELEMENTS
from recipe_runner.family_checks import teacher_in_training
from schemas import Recipe
from schemas.bolt_on import LinearLayer, MLPLayer, ResidualMLPLayer, TransformerLayer
from schemas.stages import Stage

GIB = 1 << 30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
_RUNTIME_BYTES = GIB


@dataclass(frozen=True)
class StackShape:
    """Depth and widths of a transformer stack: what its activations scale with."""

    layers: int
    hidden: int
    ffn: int
    heads: int
    query: int = 0  # heads x head_dim (0: hidden)
    kv: int = 0  # kv heads x head_dim (0: query)
    qk_norm: bool = False  # a norm over each head's queries and keys (Qwen3)
    vocab: int = 0  # rows of the embedding: the width of its logits

    @classmethod
    def of(cls, model: nn.Module) -> StackShape:
        config = model.config

        def first(*names: str, default: int | None = None) -> int:
            for name in names:
                value = getattr(config, name, None)
                if isinstance(value, int):
                    return value
            if default is not None:
                return default
            raise ValueError(f"{type(config).__name__} has none of {names}")

        hidden = first("d_model", "hidden_size")
        heads = first("num_attention_heads", "num_heads")
        head_dim = getattr(config, "head_dim", None) or getattr(config, "d_kv", None) or hidden // heads
        kv_heads = getattr(config, "num_key_value_heads", None) or heads
        return cls(
            layers=first("num_hidden_layers", "num_layers"),
            hidden=hidden,
            ffn=first("intermediate_size", "d_ff", "ffn_dim", "n_inner", default=4 * hidden),  # GPT-2: 4 x width
            heads=heads,
            query=heads * head_dim,
            kv=kv_heads * head_dim,
            qk_norm=any(name.endswith(".q_norm") for name, _ in model.named_modules()),
            vocab=getattr(config, "vocab_size", 0) or 0,
        )

    def layer_bytes_per_token(self, a: int, r: int) -> int:
        """Bytes one layer keeps per token for backward (see the module docstring); a: compute, r: residual."""
        query, kv = self.query or self.hidden, self.kv or self.query or self.hidden
        norms = 2 * self._norm_bytes(r)
        # Linear inputs: the norm outputs themselves, or the low-precision copies autocast makes for q, k, v, gate, up.
        inputs = 2 * self.hidden * a if r == a else 5 * self.hidden * a
        total = norms + inputs + (2 * query + 2 * kv) * a + 4 * self.ffn * a + 4 * self.heads  # + softmax stats
        if self.qk_norm:
            head_dim = query // self.heads
            total += (4 + a) * (query + kv) + 4 * (query + kv) // head_dim
        return total

    def bytes_per_token(self, a: int, r: int) -> int:
        """Every layer, the final norm, the token id and the rotary tables' row."""
        head_dim = (self.query or self.hidden) // self.heads
        return self.layers * self.layer_bytes_per_token(a, r) + self._norm_bytes(r) + 8 + 2 * head_dim * a

    def _norm_bytes(self, r: int) -> int:
        """An RMSNorm keeps its input as float32, its normalised input in the residual dtype and 1/rms."""
        return (4 + r) * self.hidden + 4


@dataclass(frozen=True)
class Sizes:
    """Parameter counts and shapes of the three components, as built on the meta device."""

    teacher_params: int
    teacher: StackShape
    student_params: int
    student: StackShape
    bolt_on_params: int
    projection_params: int = 0  # hidden_states losses' projections, trained with the student (logits family)
    feature_kinds: frozenset[str] = frozenset()  # what the feature losses read: "hidden", "attention" (logits family)


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
    batch_tokens: int  # padded student tokens of the largest micro-batch the estimate is for

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


def _held_student_dtype(recipe: Recipe) -> str:
    """The student's dtype in training: the trained dtype when a stage updates its weights (not only LoRA
    adapters over them; see set_trained_dtype)."""
    if recipe.trains_student_weights:
        return "bfloat16" if recipe.hardware.trained_weights == "bf16_stochastic" else "float32"
    return recipe.student.dtype


def estimate_memory(recipe: Recipe, stage: Stage, sizes: Sizes, student_trainable: int) -> MemoryEstimate:
    """Itemised peak memory of `stage`; `student_trainable` is the student's (or its LoRA adapters') trainable count."""
    hardware = recipe.hardware
    a = 4 if hardware.precision == "fp32" else 2
    s_teacher = recipe.teacher.max_length
    # Padded tokens of the largest micro-batch (b x s, or the batch_tokens budget); the budget counts student
    # tokens, and a prompt's teacher tokenisation is taken to scale with its student one.
    tokens = hardware.batch_token_bound(recipe.student.max_length)
    teacher_tokens = min(hardware.batch_size * s_teacher, tokens * s_teacher // recipe.student.max_length)
    trains_student = "student" in stage.trainable
    trains_bolt_on = "bolt_on" in stage.trainable
    lora = trains_student and stage.student_lora is not None
    items: list[MemoryItem] = []

    teacher_held = recipe.teacher_cache is None and teacher_in_training(recipe)
    if teacher_held:
        items.append(MemoryItem("teacher weights (frozen)", sizes.teacher_params * DTYPE_BYTES[recipe.teacher.dtype]))
    held_dtype = _held_student_dtype(recipe)
    held = DTYPE_BYTES[held_dtype]
    if not trains_student or lora:
        items.append(MemoryItem(f"student weights (frozen, {held_dtype})", sizes.student_params * held))
    logits = recipe.family == "logits"
    if not trains_bolt_on and not logits:
        bf16 = hardware.trained_weights == "bf16_stochastic"
        label = f"bolt-on weights (frozen, {'bf16' if bf16 else 'fp32'})"
        items.append(MemoryItem(label, sizes.bolt_on_params * (2 if bf16 else 4)))
    trainable = (student_trainable if trains_student else 0) + (sizes.bolt_on_params if trains_bolt_on else 0)
    if hardware.trained_weights == "bf16_stochastic":
        items.append(MemoryItem("trainable: bf16 weights + grads + AdamW states (8 B/param)", 8 * trainable))
    else:
        items.append(MemoryItem("trainable: fp32 weights + grads + AdamW states (16 B/param)", 16 * trainable))

    st = sizes.student
    # fp32 weights under autocast keep the residual stream in fp32; bf16 weights keep it in bf16.
    r = 4 if held == 4 or hardware.precision == "fp32" else min(a, held)
    per_layer = tokens * st.layer_bytes_per_token(a, r)
    if not trains_student:
        items.append(MemoryItem("student activations (no grad, one layer)", per_layer))
    elif hardware.gradient_checkpointing:
        checkpointed = tokens * st.layers * st.hidden * r + per_layer
        threshold = hardware.checkpoint_min_tokens
        unrecomputed = 0 if threshold is None else min(tokens, threshold - 1) * st.layers * per_layer // tokens
        if unrecomputed > checkpointed:
            label = f"student activations (batches under {threshold} tokens, not recomputed)"
            items.append(MemoryItem(label, unrecomputed))
        else:
            items.append(MemoryItem("student activations (checkpointed)", checkpointed))
    else:
        items.append(MemoryItem("student activations", tokens * st.bytes_per_token(a, r)))
    if logits:
        items += _logit_items(sizes, tokens, a, teacher_held, across=recipe.alignment is not None)
        te, length = sizes.teacher, recipe.student.max_length
        if "hidden" in sizes.feature_kinds:
            kept = tokens * te.hidden * a * (te.layers + 1)
            items.append(MemoryItem("teacher hidden states (every layer, for hidden_states losses)", kept))
        if "attention" in sizes.feature_kinds and teacher_held:
            kept = tokens * length * te.heads * te.layers * a
            items.append(MemoryItem("teacher attention maps (every layer, for attention losses)", kept))
    else:
        items += _hidden_state_items(recipe, sizes, tokens, teacher_tokens, a)
    if hardware.attention == "eager" and trains_student:  # SDPA keeps no scores; eager keeps each layer's
        # ... or one layer's at a time when checkpointed, unless an attention loss has every layer's returned
        layers = st.layers if "attention" in sizes.feature_kinds or not hardware.gradient_checkpointing else 1
        scores = tokens * recipe.student.max_length * st.heads * layers * a * 2
        items.append(MemoryItem("student attention scores (eager attention, softmax in and out)", scores))
    if hardware.device != "cpu":  # a CPU run has no CUDA context or cuBLAS workspace
        items.append(MemoryItem("runtime (CUDA context, workspace)", _RUNTIME_BYTES))
    return MemoryEstimate(stage.name, tuple(items), hardware.vram_gb, tokens)


def _logit_items(sizes: Sizes, tokens: int, a: int, teacher: bool, across: bool) -> list[MemoryItem]:
    te, st = sizes.teacher, sizes.student
    chunk = min(tokens * st.vocab, CHUNK_ELEMENTS)
    items = [
        MemoryItem("student logits + their gradient", 2 * tokens * st.vocab * a),
        MemoryItem("loss work on one chunk (float32, recomputed)", 6 * chunk * 4),
    ]
    if across:  # two vocabularies: the rows at aligned positions are gathered out of both sides' logits
        items.append(
            MemoryItem("logits at aligned positions (copies of both sides)", tokens * (st.vocab + te.vocab) * a)
        )
    if teacher:  # not when it only wrote the answers that cross-entropy trains on
        items[:0] = [
            MemoryItem("teacher forward (one layer, no grad)", tokens * (6 * te.hidden + 3 * te.ffn) * a),
            MemoryItem("teacher logits", tokens * te.vocab * a),
        ]
    return items


def _hidden_state_items(recipe: Recipe, sizes: Sizes, tokens: int, teacher_tokens: int, a: int) -> list[MemoryItem]:
    items = [MemoryItem("bolt-on activations", tokens * a * _bolt_on_elements(recipe, sizes.student.hidden))]
    s_teacher = recipe.teacher.max_length
    te = sizes.teacher
    if recipe.teacher_cache is None:
        forward = teacher_tokens * (6 * te.hidden + 3 * te.ffn) * a + 2 * te.heads * teacher_tokens * s_teacher * a
        items.append(MemoryItem("teacher forward (one layer, no grad)", forward))
    target_bytes = DTYPE_BYTES[recipe.teacher_cache.dtype if recipe.teacher_cache else recipe.teacher.dtype]
    items.append(MemoryItem("teacher targets", teacher_tokens * te.hidden * target_bytes))
    items.append(MemoryItem("loss buffers (fp32 output + grad)", tokens * te.hidden * 4 * 2))
    return items

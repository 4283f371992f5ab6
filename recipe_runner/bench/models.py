"""The recipe's architectures with random weights: nothing is downloaded, the same builders run.

Hub ids and local directories become inline configs (from `resolve_config`, offline), so `build_model` takes its
random-weight path. `--small` divides every width by one factor (teacher width -> 256 at most), keeps head
widths, caps depth at 2 layers (unless `--full-depth`) and vocabularies at 8192, so the widths still chain
student -> bolt-on -> teacher.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import PreTrainedModel

from components.models import build_model, hidden_width, resolve_config
from components.models.loading import Attention, Role
from schemas import Recipe
from schemas.bolt_on import BoltOn, LinearLayer, MLPLayer, ResidualMLPLayer, TransformerLayer
from schemas.models import ModelSource
from schemas.stages import FEATURE_LOSSES, HiddenStatesLoss, Stage

SMALL_TEACHER_WIDTH = 256
SMALL_MAX_LAYERS = 2
SMALL_MAX_VOCAB = 8192
# Config keys that name a model's origin rather than its shape; an inline config does without them.
_ORIGIN_KEYS = ("_name_or_path", "architectures", "transformers_version", "id2label", "label2id", "dtype")
_WIDTH_KEYS = ("hidden_size", "d_model", "intermediate_size", "d_ff")
_LAYER_KEYS = ("num_hidden_layers", "num_layers", "num_decoder_layers")


def config_dict(source: ModelSource) -> dict:
    """The architecture as an inline config, resolved without the network."""
    if source.config is not None:
        return dict(source.config)
    values = resolve_config(source).to_dict()
    return {key: value for key, value in values.items() if key not in _ORIGIN_KEYS}


def shrink_factor(recipe: Recipe) -> int:
    """One divisor for every width, so that the teacher is at most SMALL_TEACHER_WIDTH wide."""
    width = config_dict(recipe.teacher).get("d_model") or config_dict(recipe.teacher).get("hidden_size") or 1
    return max(1, math.ceil(width / SMALL_TEACHER_WIDTH))


def _heads(heads: int, factor: int, width: int | None = None) -> int:
    count = max(1, heads // factor)
    while width is not None and width % count:
        count -= 1
    return count


def shrink_config(values: dict, factor: int, keep_depth: bool = False) -> dict:
    """Widths / factor, head counts / factor (head widths kept), depth <= 2 unless `keep_depth`, vocabulary <= 8192."""
    out = dict(values)
    out.pop("layer_types", None)  # per-layer list sized to the old depth; the config rebuilds it
    hidden, heads = out.get("hidden_size"), out.get("num_attention_heads")
    if isinstance(hidden, int) and isinstance(heads, int) and not out.get("head_dim"):
        # Qwen2 / Llama derive the head width from hidden_size; written out, it stays when the width shrinks
        # (1536 / 14 = 109 would otherwise be one odd-width head, which rotary embeddings cannot split).
        out["head_dim"] = hidden // heads
    for key in _WIDTH_KEYS:
        if isinstance(out.get(key), int):
            out[key] = max(1, out[key] // factor)
    for key in _LAYER_KEYS:
        if isinstance(out.get(key), int) and not keep_depth:
            out[key] = min(out[key], SMALL_MAX_LAYERS)
    if isinstance(out.get("num_attention_heads"), int):
        out["num_attention_heads"] = _heads(out["num_attention_heads"], factor)
        kv = out.get("num_key_value_heads")
        if isinstance(kv, int):
            out["num_key_value_heads"] = _heads(kv, factor, out["num_attention_heads"])
    if isinstance(out.get("num_heads"), int):
        out["num_heads"] = _heads(out["num_heads"], factor)
    if isinstance(out.get("vocab_size"), int):
        out["vocab_size"] = min(out["vocab_size"], SMALL_MAX_VOCAB)
        for key in ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id"):
            if isinstance(out.get(key), int) and out[key] >= out["vocab_size"]:
                out[key] = None  # a special id beyond the capped vocabulary; random ids never use it
    return out


def shrink_bolt_on(spec: BoltOn, factor: int) -> BoltOn:
    """Every bolt-on width / factor; transformer heads / factor, still dividing the width."""
    layers = []
    for layer in spec.layers:
        if isinstance(layer, LinearLayer):
            layer = layer.model_copy(update={"out_dim": max(1, layer.out_dim // factor)})
        elif isinstance(layer, MLPLayer):
            hidden = [max(1, width // factor) for width in layer.hidden_dims]
            layer = layer.model_copy(update={"hidden_dims": hidden, "out_dim": max(1, layer.out_dim // factor)})
        elif isinstance(layer, TransformerLayer):
            dim = max(1, layer.dim // factor)
            update = {"dim": dim, "ffn_dim": max(1, layer.ffn_dim // factor), "heads": _heads(layer.heads, factor, dim)}
            layer = layer.model_copy(update=update)
        elif isinstance(layer, ResidualMLPLayer):
            layer = layer.model_copy(update={"hidden_dim": max(1, layer.hidden_dim // factor)})
        layers.append(layer)
    return spec.model_copy(update={"layers": layers})


def _inline(source: ModelSource, values: dict) -> ModelSource:
    data = source.model_dump() | {"model": None, "config": values, "tokenizer": source.tokenizer or source.model}
    return type(source).model_validate(data)


def _depth(values: dict) -> int | None:
    return next((int(values[key]) for key in _LAYER_KEYS if key in values), None)


def _moved(index: int, depth: int | None, shrunk: int | None, last: int) -> int:
    """A layer index of a model `depth` deep, at the same relative depth of one `shrunk` deep (at most `last`
    there); indices from the end (negative) stay."""
    if index < 0 or not depth or not shrunk or depth == shrunk:
        return index
    return min(round(index * shrunk / depth), last)


def _feature_layers_moved(recipe: Recipe, depths: dict[str, tuple[int | None, int | None]]) -> list[Stage]:
    """Stages whose hidden_states and attention layer maps point into the shrunk models: a map of a 28-layer
    student would otherwise name layers a 2-layer one does not have."""
    stages = []
    for stage in recipe.stages:
        losses = []
        for loss in stage.losses:
            if isinstance(loss, FEATURE_LOSSES):
                extra = 0 if isinstance(loss, HiddenStatesLoss) else -1  # hidden states count the embeddings too
                s_old, s_new = depths["student"]
                t_old, t_new = depths["teacher"]
                layers = {
                    _moved(s, s_old, s_new, (s_new or 0) + extra): _moved(t, t_old, t_new, (t_new or 0) + extra)
                    for s, t in loss.layers.items()
                }
                loss = loss.model_copy(update={"layers": layers})
            losses.append(loss)
        stages.append(stage.model_copy(update={"losses": losses}))
    return stages


def random_weights_recipe(recipe: Recipe, small: bool, keep_depth: bool = False) -> tuple[Recipe, int]:
    """The recipe with inline configs (random weights) and, for `small`, shrunk (every layer kept with
    `keep_depth`, so per-step launch and compile counts are those of the real model); returns the factor too."""
    factor = shrink_factor(recipe) if small else 1
    teacher, student = config_dict(recipe.teacher), config_dict(recipe.student)
    bolt_on, stages = recipe.bolt_on, recipe.stages
    if small:
        shrunk = shrink_config(teacher, factor, keep_depth), shrink_config(student, factor, keep_depth)
        depths = {"teacher": (_depth(teacher), _depth(shrunk[0])), "student": (_depth(student), _depth(shrunk[1]))}
        teacher, student = shrunk
        bolt_on = shrink_bolt_on(bolt_on, factor)
        stages = _feature_layers_moved(recipe, depths)
    update = {"teacher": _inline(recipe.teacher, teacher), "student": _inline(recipe.student, student)}
    return recipe.model_copy(update={**update, "bolt_on": bolt_on, "stages": stages}), factor


def build_random(
    source: ModelSource,
    role: Role,
    device: torch.device,
    seed: int,
    attention: Attention = "sdpa",
    fused_kernels: bool = True,
) -> PreTrainedModel:
    """Random weights allocated straight on `device` (no host copy of a multi-GB model first)."""
    with torch.device(device):
        return build_model(source, role, device=device, attention=attention, seed=seed, fused_kernels=fused_kernels)


def dense_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters outside lookup tables (token and T5 relative-position embeddings, tied copies included):
    the ones that multiply activations, so the ones the FLOP count sees."""
    tables = {id(p) for module in model.modules() if isinstance(module, nn.Embedding) for p in module.parameters()}
    return [p for p in model.parameters() if id(p) not in tables]


def weight_bytes(model: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def attention_shape(model: PreTrainedModel) -> tuple[int, int]:
    """(layers, attention width = heads x head dim) of a transformers model, for the attention FLOP term."""
    config = model.config
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", 0)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "num_heads", 0)
    head_dim = getattr(config, "head_dim", None) or getattr(config, "d_kv", None) or hidden_width(config) // heads
    return int(layers), int(heads * head_dim)

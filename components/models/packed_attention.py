"""Packed forwards of a transformers model: its attention modules call ours, which reads the sequence offsets.

transformers looks attention functions up by the name in `config._attn_implementation`, so ours is registered
under PACKED_ATTENTION and the student switched to it for training. The name has no mask function, so
transformers builds no [T, T] mask for a packed row. The name lives on the in-memory config only:
`save_pretrained` does not write it, and an export loads with the attention the recipe names.
"""

from __future__ import annotations

import inspect

import torch
from torch import Tensor, nn

from components.packed_sequences import PackedSequences, packed_attention

PACKED_ATTENTION = "recipe_packed"


def _attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    packed_sequences: PackedSequences | None = None,
    **_: object,
) -> tuple[Tensor, None]:
    """transformers' attention signature: [1, H, T, D] in, [1, T, H, D] out."""
    if packed_sequences is None:
        raise RuntimeError(f"{PACKED_ATTENTION} attention needs packed_sequences: call the model through DistillModel")
    if dropout:
        raise RuntimeError("packed attention has no attention dropout; packing should have been refused")
    device = query.device.type
    if torch.is_autocast_enabled(device):  # RoPE in float32 leaves query and key in float32
        dtype = torch.get_autocast_dtype(device)
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    q, k, v = (tensor[0].transpose(0, 1) for tensor in (query, key, value))
    causal = bool(getattr(module, "is_causal", True))
    return packed_attention(q, k, v, packed_sequences, causal, scaling).unsqueeze(0), None


def packing_problem(model: nn.Module) -> str | None:
    """Why `model` cannot run packed (None when it can)."""
    config = model.config
    name = type(model).__name__
    if not getattr(type(model), "_supports_attention_backend", False):
        return f"{name} does not take attention functions from transformers' attention interface"
    if "position_ids" not in inspect.signature(model.forward).parameters:
        return f"{name}.forward takes no position_ids, so packed tokens would lose their positions"
    if getattr(config, "attention_dropout", 0.0):
        return f"{name} uses attention dropout ({config.attention_dropout}), which the packed kernel does not have"
    layer_types = getattr(config, "layer_types", None) or ()
    if getattr(config, "use_sliding_window", False) or "sliding_attention" in layer_types:
        return f"{name} uses sliding-window attention, which packing does not support yet"
    return None


def use_packed_attention(model: nn.Module) -> None:
    """Switch `model` to PACKED_ATTENTION (registered with transformers on first use)."""
    from transformers import AttentionInterface

    if PACKED_ATTENTION not in AttentionInterface._global_mapping:
        AttentionInterface.register(PACKED_ATTENTION, _attention_forward)
    model.set_attn_implementation(PACKED_ATTENTION)


def runs_packed(model: nn.Module) -> bool:
    """Whether `model` was switched to PACKED_ATTENTION (it then needs packed_sequences in every forward)."""
    return getattr(model.config, "_attn_implementation", None) == PACKED_ATTENTION

"""The plan's per-layer activation term against what autograd really keeps: saved tensors counted on a CPU.

CPU autocast casts the same ops to bf16 as CUDA autocast (linear, SDPA), so the bytes a decoder layer saves for
backward are the ones it saves on a GPU; transformers' eager RMSNorm (fused_kernels off) runs the same ops on both.
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel

from recipe_runner.memory import StackShape

SHAPES = {
    "qwen3": {"hidden_size": 64, "intermediate_size": 192, "num_attention_heads": 4, "num_key_value_heads": 2},
    "llama": {"hidden_size": 64, "intermediate_size": 160, "num_attention_heads": 4, "num_key_value_heads": 4},
}


def _saved_bytes(model: torch.nn.Module, tokens: int, autocast: bool) -> int:
    """Bytes of distinct non-parameter storages autograd saves in one forward (a training step's activations)."""
    parameters = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in parameters:
            saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    ids = torch.randint(0, 100, (2, tokens // 2))
    with (
        torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor),
        torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast),
    ):
        out = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state
    out.float().sum().backward()
    return sum(saved.values())


@pytest.mark.parametrize("model_type", sorted(SHAPES))
@pytest.mark.parametrize("weights", [torch.float32, torch.bfloat16])
def test_layer_term_matches_saved_tensors(model_type: str, weights: torch.dtype) -> None:
    config = AutoConfig.for_model(
        model_type, **SHAPES[model_type], head_dim=32, num_hidden_layers=2, vocab_size=100, use_cache=False
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    model = AutoModel.from_config(config).to(weights).train()
    autocast = weights == torch.float32  # fp32 masters run under autocast; bf16 weights compute in bf16
    # The slope over two lengths drops what does not grow with tokens (rotary tables, masks).
    per_token = (_saved_bytes(model, 256, autocast) - _saved_bytes(model, 128, autocast)) / 128
    shape = StackShape.of(model)
    assert shape.qk_norm == (model_type == "qwen3") and shape.kv == SHAPES[model_type]["num_key_value_heads"] * 32
    estimated = shape.bytes_per_token(a=2, r=4 if autocast else 2)
    assert per_token <= estimated <= 1.05 * per_token, (per_token, estimated)

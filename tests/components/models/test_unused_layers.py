"""The parameters a hidden state does not depend on are exactly those autograd leaves without a gradient."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoConfig, AutoModel, T5EncoderModel

from components.models.unused_layers import parameters_past

CONFIGS = {
    "qwen3": dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                  intermediate_size=64, vocab_size=50, head_dim=8),
    "gpt2": dict(n_embd=32, n_layer=3, n_head=4, vocab_size=50, n_positions=16),
    "t5": dict(d_model=32, num_layers=3, num_heads=4, d_kv=8, d_ff=64, vocab_size=50),
}  # fmt: skip


@pytest.mark.parametrize("kind", sorted(CONFIGS))
@pytest.mark.parametrize("layer", [-1, 3, 2, -2, 1, 0])
def test_what_a_hidden_state_does_not_depend_on_gets_no_gradient(kind, layer):
    torch.manual_seed(0)
    config = AutoConfig.for_model(kind, **CONFIGS[kind])
    model = T5EncoderModel(config) if kind == "t5" else AutoModel.from_config(config)
    out = model(input_ids=torch.randint(0, 50, (1, 5)), output_hidden_states=True)
    out.hidden_states[layer].sum().backward()
    without_gradient = {name for name, parameter in model.named_parameters() if parameter.grad is None}
    assert parameters_past(model, layer) == without_gradient

"""Per-batch gradient checkpointing: only batches at or over the token threshold recompute, with equal gradients."""

from __future__ import annotations

import torch
from transformers import Qwen3Config, Qwen3Model

from components.models.checkpointing import StudentCheckpointing


def _student() -> Qwen3Model:
    torch.manual_seed(0)
    config = Qwen3Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        head_dim=8, vocab_size=99, max_position_embeddings=64, attention_dropout=0.0,
    )  # fmt: skip
    return Qwen3Model(config).train()


def _grads(student: Qwen3Model, ids: torch.Tensor) -> list[torch.Tensor]:
    student.zero_grad(set_to_none=True)
    student(input_ids=ids).last_hidden_state.square().mean().backward()
    return [p.grad.clone() for p in student.parameters()]


def test_threshold_switches_the_layers_and_gradients_do_not_change():
    student = _student()
    checkpointing = StudentCheckpointing(student, enabled=True, min_tokens=40)
    assert len(checkpointing.layers) >= 2  # every decoder layer (and the model's own switch)
    ids = torch.randint(0, 99, (4, 10))
    assert checkpointing.for_batch(ids.numel())
    assert all(layer.gradient_checkpointing for layer in checkpointing.layers)
    recomputed = _grads(student, ids)
    assert not checkpointing.for_batch(39)
    assert not any(layer.gradient_checkpointing for layer in checkpointing.layers)
    kept = _grads(student, ids)
    for a, b in zip(recomputed, kept, strict=True):
        torch.testing.assert_close(a, b)


def test_without_threshold_every_batch_recomputes_and_disabled_means_never():
    always = StudentCheckpointing(_student(), enabled=True)
    assert always.for_batch(1) and always.for_batch(10_000)
    never = StudentCheckpointing(_student(), enabled=False, min_tokens=1)
    assert not never.for_batch(10_000) and never.layers == []

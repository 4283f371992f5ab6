"""The plan's analytic LoRA count equals what peft actually adds."""

from __future__ import annotations

import pytest
from peft import LoraConfig, get_peft_model

from components.models import build_model, lora_parameter_count, lora_targets
from schemas.models import HiddenStatesStudent
from schemas.stages import LoRA

TINY_QWEN3 = {
    "model_type": "qwen3",
    "hidden_size": 32,
    "intermediate_size": 48,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "vocab_size": 99,
}


def tiny_student():
    source = HiddenStatesStudent(type="hidden_states", config=TINY_QWEN3, tokenizer="tok.json", dtype="float32")
    return build_model(source, "student")


@pytest.mark.parametrize(
    "targets", [["q_proj", "k_proj", "v_proj", "o_proj"], ["gate_proj", "down_proj", "embed_tokens"]]
)
def test_analytic_count_matches_peft(targets: list[str]) -> None:
    lora = LoRA(r=4, target_modules=targets)
    expected = lora_parameter_count(tiny_student(), lora)
    peft_model = get_peft_model(tiny_student(), LoraConfig(r=lora.r, lora_alpha=lora.alpha, target_modules=targets))
    added = sum(p.numel() for name, p in peft_model.named_parameters() if "lora_" in name)
    assert expected == added > 0


def test_targets_match_by_suffix_only() -> None:
    assert len(lora_targets(tiny_student(), LoRA(target_modules=["q_proj"]))) == 2
    assert lora_targets(tiny_student(), LoRA(target_modules=["proj"])) == []

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


def test_gpt2s_conv1d_layers_are_adapted_counted_and_merged_like_linear_ones() -> None:
    """GPT-2 keeps its projections in transformers' Conv1D, weights stored (in, out): peft adapts them with
    fan_in_fan_out, which a stage sets from the targets; a merge then gives the same outputs."""
    import warnings

    import torch
    from transformers import GPT2Config, GPT2Model

    from components.models.lora import fans_in_first, lora_target_problem

    def gpt2():
        torch.manual_seed(0)
        return GPT2Model(
            GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=99, bos_token_id=0, eos_token_id=0)
        ).eval()

    lora = LoRA(r=4, target_modules=["c_attn", "c_proj"])
    assert lora_target_problem(gpt2(), lora) is None and fans_in_first(gpt2(), lora)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=lora.target_modules, fan_in_fan_out=True)
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*fan_in_fan_out.*")  # peft's warning when it does not fit
        adapted = get_peft_model(gpt2(), config)
    added = sum(p.numel() for name, p in adapted.named_parameters() if "lora_" in name)
    assert lora_parameter_count(gpt2(), lora) == added > 0
    for name, parameter in adapted.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter)  # B starts at zero: give the adapters something to merge
    ids = torch.tensor([[1, 2, 3, 4]])
    before = adapted(ids).last_hidden_state
    torch.testing.assert_close(adapted.merge_and_unload()(ids).last_hidden_state, before)
    mixed = lora_target_problem(GPT2Model(GPT2Config(n_layer=1, vocab_size=99)), LoRA(target_modules=["c_attn", "wte"]))
    assert mixed is None  # Conv1D and Embedding together are fine; Linear and Conv1D are not


@pytest.mark.parametrize(("target", "other"), [("lm_head", "input embeddings"), ("embed_tokens", "LM head")])
def test_a_target_tied_to_another_layer_is_refused_and_untied_it_is_not(target: str, other: str) -> None:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from components.models.lora import lora_target_problem

    def lm(tied: bool):
        return Qwen3ForCausalLM(Qwen3Config(**{k: v for k, v in TINY_QWEN3.items() if k != "model_type"},
                                            tie_word_embeddings=tied))  # fmt: skip

    lora = LoRA(target_modules=["q_proj", target])
    said = lora_target_problem(lm(tied=True), lora)
    assert said is not None and said.startswith(f"{'model.' * (target != 'lm_head')}{target} shares its weight with ")
    assert f"the {other} (tie_word_embeddings): merging its adapter would change both layers" in said
    assert lora_target_problem(lm(tied=False), lora) is None

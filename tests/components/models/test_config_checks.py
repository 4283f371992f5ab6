"""Inline architectures: what transformers would accept silently is named; what it understands is left alone."""

from __future__ import annotations

from components.models.config_checks import inline_config_problems
from components.models.source import config_from_dict

QWEN = {"model_type": "qwen3", "hidden_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 12, "intermediate_size": 96, "vocab_size": 2000}  # fmt: skip
T5 = {"model_type": "t5", "d_model": 64, "num_layers": 2, "num_heads": 4, "d_kv": 16, "d_ff": 128,
      "vocab_size": 2000, "feed_forward_proj": "gated-gelu"}  # fmt: skip


def problems(values: dict) -> list[tuple[str, str]]:
    return inline_config_problems(values, config_from_dict(values, "inline config"))


def test_valid_configs_have_no_problems() -> None:
    assert problems(QWEN) == []
    assert problems(T5) == []


def test_aliases_and_spellings_transformers_converts_are_not_unknown() -> None:
    assert problems({**T5, "hidden_size": 64, "num_attention_heads": 4}) == []  # T5's attribute_map
    assert problems({**QWEN, "rope_theta": 10000.0, "hidden_act": "silu"}) == []  # folded into rope_parameters


def test_a_misspelt_key_is_named_with_the_key_it_was_meant_to_be() -> None:
    found = problems({**QWEN, "num_hidden_layer": 4})
    assert found == [("num_hidden_layer", "unknown key 'num_hidden_layer' for model_type 'qwen3'; did you mean "
                      "'num_hidden_layers'?")]  # fmt: skip


def test_sizes_must_be_positive_and_flags_are_not_sizes() -> None:
    assert problems({**QWEN, "num_hidden_layers": 0, "head_dim": -12}) == [
        ("num_hidden_layers", "must be > 0, got 0"),
        ("head_dim", "must be > 0, got -12"),
    ]
    assert problems({**QWEN, "use_sliding_window": False, "max_window_layers": 2}) == []


def test_a_head_width_the_model_derives_must_divide_and_be_even_under_rotary_embeddings() -> None:
    """qwen2 and gpt2 build with a remainder dropped (the first forward then fails deep in torch); qwen3 and T5
    carry a head width of their own, so their hidden size may be anything."""
    qwen2 = {"model_type": "qwen2", "num_hidden_layers": 2, "num_key_value_heads": 2, "vocab_size": 2000}
    assert problems({**qwen2, "hidden_size": 30, "num_attention_heads": 4}) == [
        ("hidden_size", "30 is not a multiple of num_attention_heads 4: each head would be 7.5 wide; give a "
         "multiple, e.g. 32")
    ]  # fmt: skip
    assert problems({**qwen2, "hidden_size": 28, "num_attention_heads": 4}) == [
        ("hidden_size", "28 / num_attention_heads 4 makes heads 7 wide, and rotary position embeddings need an "
         "even width: change either")
    ]  # fmt: skip
    assert problems({**qwen2, "hidden_size": 32, "num_attention_heads": 4}) == []
    gpt2 = {"model_type": "gpt2", "n_layer": 2, "vocab_size": 2000, "bos_token_id": 1, "eos_token_id": 1}
    assert [key for key, _ in problems({**gpt2, "n_embd": 30, "n_head": 4})] == ["n_embd"]  # the key as written
    assert problems({**gpt2, "n_embd": 28, "n_head": 4}) == []  # learned positions: any whole width
    assert problems({**QWEN, "hidden_size": 30}) == []
    assert problems({**T5, "d_model": 30}) == []


def test_special_token_ids_outside_the_vocabulary_are_named() -> None:
    gpt2 = {"model_type": "gpt2", "n_layer": 2, "n_embd": 32, "n_head": 4, "vocab_size": 2000}
    assert problems(gpt2) == [
        ("bos_token_id", "50256 is outside vocab_size 2000: set it to the tokenizer's id of that token"),
        ("eos_token_id", "50256 is outside vocab_size 2000: set it to the tokenizer's id of that token"),
    ]
    assert problems({**gpt2, "bos_token_id": 1935, "eos_token_id": 1935}) == []

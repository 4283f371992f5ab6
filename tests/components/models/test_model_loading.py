"""Models build from inline configs (seeded), load back from a saved directory, and build on meta for planning."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM, Qwen3Model, T5Config, T5EncoderModel, T5ForConditionalGeneration

from components.models import ModelSourceError, build_model, final_norm, freeze
from schemas.models import HiddenStatesStudent, T5EncoderTeacher

TINY_T5 = {
    "model_type": "t5",
    "d_model": 32,
    "d_ff": 64,
    "d_kv": 8,
    "num_heads": 4,
    "num_layers": 2,
    "vocab_size": 99,
    "feed_forward_proj": "gated-gelu",
    "relative_attention_num_buckets": 8,
}
TINY_QWEN3 = {
    "model_type": "qwen3",
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 8,
    "vocab_size": 99,
    "max_position_embeddings": 64,
}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def teacher(**fields: object) -> T5EncoderTeacher:
    return T5EncoderTeacher(type="t5_encoder", dtype="float32", **fields)


def student(**fields: object) -> HiddenStatesStudent:
    return HiddenStatesStudent(type="hidden_states", dtype="float32", **fields)


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.tensor([[5, 6, 7, 8, 1], [9, 10, 1, 0, 0]])
    return ids, (ids != 0).long()


def test_inline_config_gives_seeded_random_weights_and_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first = build_model(teacher(config=TINY_T5, tokenizer="tok.json"), "teacher")
    assert torch.equal(torch.rand(1), expected_next)
    second = build_model(teacher(config=TINY_T5, tokenizer="tok.json"), "teacher")
    other_seed = build_model(teacher(config=TINY_T5, tokenizer="tok.json"), "teacher", seed=1)
    assert isinstance(first, T5EncoderModel)
    for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(first.shared.weight, other_seed.shared.weight)


def test_t5_encoder_round_trips_through_a_local_directory(tmp_path) -> None:
    built = build_model(teacher(config=TINY_T5, tokenizer="tok.json"), "teacher").eval()
    built.save_pretrained(tmp_path)
    loaded = build_model(teacher(model=str(tmp_path)), "teacher").eval()
    assert isinstance(loaded, T5EncoderModel)
    ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(
            built(ids, attention_mask=mask).last_hidden_state, loaded(ids, attention_mask=mask).last_hidden_state
        )


def test_qwen3_student_round_trips_through_a_local_directory(tmp_path) -> None:
    built = build_model(student(config=TINY_QWEN3, tokenizer="tok.json"), "student").eval()
    assert isinstance(built, Qwen3Model)  # base model: no LM head
    built.save_pretrained(tmp_path)
    loaded = build_model(student(model=str(tmp_path)), "student").eval()
    ids, mask = batch()
    with torch.no_grad():
        assert torch.equal(
            built(ids, attention_mask=mask).last_hidden_state, loaded(ids, attention_mask=mask).last_hidden_state
        )


def test_dtype_comes_from_the_source() -> None:
    model = build_model(
        HiddenStatesStudent(type="hidden_states", config=TINY_QWEN3, tokenizer="tok.json", dtype="bfloat16"), "student"
    )
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_meta_build_allocates_nothing() -> None:
    model = build_model(teacher(model="google/t5-v1_1-xxl"), "teacher", meta=True)
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.76e9, rel=0.01)


def test_weights_of_an_uncached_hub_id_are_a_source_error() -> None:
    with pytest.raises(ModelSourceError, match="hf download google/t5-v1_1-xxl"):
        build_model(teacher(model="google/t5-v1_1-xxl"), "teacher")


def test_final_norm_of_t5_encoder_and_qwen3() -> None:
    t5 = build_model(teacher(config=TINY_T5, tokenizer="tok.json"), "teacher")
    qwen = build_model(student(config=TINY_QWEN3, tokenizer="tok.json"), "student")
    assert final_norm(t5) is t5.encoder.final_layer_norm
    assert final_norm(qwen) is qwen.norm
    with pytest.raises(ValueError, match="no final norm"):
        final_norm(torch.nn.Linear(2, 2))


def test_freeze_turns_off_grads_and_dropout() -> None:
    model = build_model(teacher(config=TINY_T5, tokenizer="tok.json"), "teacher").train()
    assert freeze(model) is model
    assert not model.training and not any(p.requires_grad for p in model.parameters())


def test_full_checkpoints_load_as_encoder_and_base_model(tmp_path) -> None:
    """Hub checkpoints are T5ForConditionalGeneration / Qwen3ForCausalLM: the teacher keeps the encoder, the
    student the base model without its LM head."""
    torch.manual_seed(0)
    t5_full = T5ForConditionalGeneration(T5Config(**{k: v for k, v in TINY_T5.items() if k != "model_type"})).eval()
    t5_full.save_pretrained(tmp_path / "t5")
    qwen_full = Qwen3ForCausalLM(Qwen3Config(**{k: v for k, v in TINY_QWEN3.items() if k != "model_type"})).eval()
    qwen_full.save_pretrained(tmp_path / "qwen")
    encoder = build_model(teacher(model=str(tmp_path / "t5")), "teacher").eval()
    base = build_model(student(model=str(tmp_path / "qwen")), "student").eval()
    assert isinstance(encoder, T5EncoderModel) and isinstance(base, Qwen3Model)
    ids, mask = batch()
    with torch.no_grad():
        expected = t5_full.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(encoder(ids, attention_mask=mask).last_hidden_state, expected)
        expected = qwen_full.model(input_ids=ids, attention_mask=mask).last_hidden_state
        torch.testing.assert_close(base(ids, attention_mask=mask).last_hidden_state, expected)


def test_a_folder_whose_weights_are_another_architecture_is_refused_not_started_random(tmp_path) -> None:
    """transformers would start the missing weights random and print a table; an encoder's unsaved pooler
    (a masked-LM checkpoint) is never read for hidden states, and loads."""
    import json

    from transformers import BertConfig, BertForMaskedLM

    Qwen3ForCausalLM(Qwen3Config(**{k: v for k, v in TINY_QWEN3.items() if k != "model_type"})).save_pretrained(
        tmp_path / "qwen"
    )
    config = json.loads((tmp_path / "qwen" / "config.json").read_text())
    (tmp_path / "qwen" / "config.json").write_text(json.dumps({**config, "model_type": "bert"}))
    with pytest.raises(ModelSourceError, match=r"weights of AutoModel are not in its files .* would start random"):
        build_model(student(model=str(tmp_path / "qwen")), "student")
    bert = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64, vocab_size=99)
    BertForMaskedLM(bert).save_pretrained(tmp_path / "bert")
    assert build_model(student(model=str(tmp_path / "bert")), "student").config.model_type == "bert"


def test_flash_attention_without_its_package_or_off_cuda_is_said_before_any_weights_load(monkeypatch) -> None:
    """transformers raised an ImportError traceback for real weights and quietly used sdpa for random ones."""
    import importlib.util

    from components.models.loading import AttentionUnavailable

    tiny = student(config=TINY_QWEN3, tokenizer="unused")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(AttentionUnavailable, match="needs the flash-attn package.*hardware.attention: sdpa"):
        build_model(tiny, "student", attention="flash_attention_2")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: object())
    with pytest.raises(AttentionUnavailable, match="runs on CUDA GPUs only, and this runs on cpu"):
        build_model(tiny, "student", attention="flash_attention_2")
    monkeypatch.undo()
    assert build_model(tiny, "student", attention="flash_attention_2", meta=True) is not None  # plans

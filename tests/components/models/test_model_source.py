"""Architecture configs resolve offline: inline, local directory, shipped table; unknown ids fail clearly."""

from __future__ import annotations

import json

import pytest
from transformers import Qwen3Config, T5Config

from components.models import ModelSourceError, build_model, hidden_width, known_hub_ids, resolve_config
from schemas.models import HiddenStatesStudent, T5EncoderTeacher

TINY_T5 = {"model_type": "t5", "d_model": 32, "d_ff": 64, "d_kv": 8, "num_heads": 4, "num_layers": 2, "vocab_size": 99}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def student(model: str, **extra: object) -> HiddenStatesStudent:
    return HiddenStatesStudent(type="hidden_states", model=model, **extra)


def _inline_student(config: dict[str, object]) -> HiddenStatesStudent:
    return HiddenStatesStudent(type="hidden_states", config=config, tokenizer="tok.json")


def test_inline_config_becomes_its_model_type_config() -> None:
    config = resolve_config(T5EncoderTeacher(type="t5_encoder", config=TINY_T5, tokenizer="tok.json"))
    assert isinstance(config, T5Config)
    assert (config.d_model, config.num_layers, config.vocab_size) == (32, 2, 99)
    assert hidden_width(config) == 32


def test_inline_config_with_unknown_model_type_is_a_source_error() -> None:
    with pytest.raises(ModelSourceError, match="inline config"):
        resolve_config(_inline_student({"model_type": "no_such_arch"}))


def test_reference_models_come_from_the_known_table() -> None:
    t5 = resolve_config(T5EncoderTeacher(type="t5_encoder", model="google/t5-v1_1-xxl"))
    assert isinstance(t5, T5Config)
    assert (t5.d_model, t5.num_layers, t5.d_ff, t5.num_heads, t5.d_kv, t5.vocab_size) == (
        4096,
        24,
        10240,
        64,
        64,
        32128,
    )
    assert t5.feed_forward_proj == "gated-gelu" and t5.is_gated_act
    qwen = resolve_config(student("Qwen/Qwen3-Embedding-0.6B"))
    assert isinstance(qwen, Qwen3Config)
    shape = (qwen.hidden_size, qwen.num_hidden_layers, qwen.num_attention_heads, qwen.num_key_value_heads)
    assert shape == (1024, 28, 16, 8)
    assert (qwen.head_dim, qwen.intermediate_size, qwen.vocab_size) == (128, 3072, 151669)
    assert qwen.tie_word_embeddings
    assert resolve_config(student("Qwen/Qwen3-0.6B")).vocab_size == 151936


@pytest.mark.parametrize(
    ("hub_id", "billions"),
    [
        ("Qwen/Qwen2.5-7B", 7.07),  # base model without the 0.54B LM head (7.62B in all)
        ("Qwen/Qwen2.5-1.5B", 1.54),
        ("meta-llama/Llama-3.2-3B", 3.21),
        ("meta-llama/Llama-3.2-1B", 1.24),
        ("TinyLlama/TinyLlama-1.1B-Chat-v1.0", 1.03),
    ],
)
def test_known_architectures_have_their_published_sizes(hub_id: str, billions: float) -> None:
    model = build_model(student(hub_id), "student", meta=True)
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, rel=0.01)


def test_every_table_entry_resolves() -> None:
    assert {"google/t5-v1_1-xxl", "Qwen/Qwen3-Embedding-0.6B", "Qwen/Qwen3-0.6B"} <= set(known_hub_ids())
    for hub_id in known_hub_ids():
        assert hidden_width(resolve_config(student(hub_id))) > 0


def test_unknown_hub_id_says_how_to_get_it() -> None:
    with pytest.raises(ModelSourceError) as error:
        resolve_config(student("nobody-xyz/not-a-model"))
    assert str(error.value) == (
        "unknown hub id 'nobody-xyz/not-a-model': no local copy and not in the known-architecture table; "
        "download it first (hf download nobody-xyz/not-a-model) or give a local path / inline config"
    )


@pytest.mark.parametrize("typo", ["Qwen/Qwen3-Embeding-0.6B", "qwen/qwen3-embedding-0.6b"])
def test_a_misspelt_hub_id_is_offered_the_known_one_before_a_download(typo: str) -> None:
    with pytest.raises(ModelSourceError) as error:
        resolve_config(student(typo))
    assert "did you mean 'Qwen/Qwen3-Embedding-0.6B'? If not, download it first" in str(error.value)


@pytest.mark.parametrize(
    ("values", "said"),
    [
        ({"model_type": "qwen9", "hidden_size": 48}, "unknown model_type 'qwen9'; did you mean 'qwen3'"),
        ({"hidden_size": 48}, "has no `model_type` string, which names the architecture; save the model again"),
    ],
)
def test_a_saved_config_of_an_unknown_architecture_is_one_line_with_the_fix(tmp_path, values, said) -> None:
    (tmp_path / "config.json").write_text(json.dumps(values))
    with pytest.raises(ModelSourceError) as caught:
        resolve_config(student(str(tmp_path)))
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'config.json'}: ") and said in message and "\n" not in message


def test_pinned_revision_without_a_cached_copy_falls_back_to_the_table() -> None:
    config = resolve_config(student("Qwen/Qwen3-Embedding-0.6B", revision="v1"))
    assert config.hidden_size == 1024


def test_local_directory_is_read_from_its_config_json(tmp_path) -> None:
    resolve_config(_inline_student(TINY_T5)).save_pretrained(tmp_path)
    config = resolve_config(student(str(tmp_path)))
    assert isinstance(config, T5Config) and config.d_ff == 64


def test_missing_local_path_and_directory_without_config_are_errors(tmp_path) -> None:
    with pytest.raises(ModelSourceError, match="does not exist"):
        resolve_config(student(str(tmp_path / "absent")))
    with pytest.raises(ModelSourceError, match="no config.json"):
        resolve_config(student(str(tmp_path)))


@pytest.mark.parametrize(
    ("text", "why"), [("[1, 2]", "holds a JSON list, not the mapping"), ("{", "not readable JSON")]
)
def test_a_config_json_that_is_no_mapping_is_one_line(tmp_path, text: str, why: str) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ModelSourceError) as caught:
        resolve_config(student(str(tmp_path)))
    assert str(caught.value).startswith(f"{tmp_path / 'config.json'}: {why}")
    assert str(caught.value).endswith("copy or save the model again")


def test_a_folder_whose_config_needs_its_own_code_says_both_switches(tmp_path) -> None:
    auto_map = {"AutoConfig": "configuration_c.CConfig", "AutoModel": "modeling_c.CModel"}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not_in_transformers", "auto_map": auto_map}))
    with pytest.raises(ModelSourceError) as caught:
        resolve_config(student(str(tmp_path)))
    assert str(caught.value) == (
        f"{tmp_path}: its config names Python code shipped in the folder (AutoConfig, AutoModel in auto_map), which "
        "transformers needs to build it; read that code, then set `trust_remote_code: true` beside this `model:` in "
        "the recipe and pass --trust-remote-code"
    )


def test_remote_code_is_refused_naming_where_the_code_comes_from() -> None:
    from components.models import remote_code_refusal

    hub = HiddenStatesStudent(type="hidden_states", model="org/custom", trust_remote_code=True)
    inline = HiddenStatesStudent(
        type="hidden_states", config={"model_type": "qwen3"}, tokenizer="org/custom-tokenizer", trust_remote_code=True
    )
    assert remote_code_refusal(hub) == (
        "runs Python code shipped with org/custom; read that code, then pass --trust-remote-code to allow it"
    )
    assert "shipped with org/custom-tokenizer;" in (remote_code_refusal(inline) or "")
    assert remote_code_refusal(hub.model_copy(update={"trust_remote_code": False})) is None

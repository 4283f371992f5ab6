"""Fast tokenizers load offline from a tokenizer.json file, a directory, or fail with a clear message."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from components.models import ModelSourceError, load_tokenizer
from schemas.models import HiddenStatesStudent

VOCAB = {"[UNK]": 0, "[PAD]": 1, "a": 2, "red": 3, "cat": 4}


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def write_tokenizer_json(path) -> None:
    tokenizer = Tokenizer(models.WordLevel(VOCAB, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))


def source(tokenizer: str) -> HiddenStatesStudent:
    return HiddenStatesStudent(type="hidden_states", config={"model_type": "qwen3"}, tokenizer=tokenizer)


def test_tokenizer_json_file(tmp_path) -> None:
    write_tokenizer_json(tmp_path / "tokenizer.json")
    tokenizer = load_tokenizer(source(str(tmp_path / "tokenizer.json")))
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    encoded = tokenizer("a red cat", return_offsets_mapping=True, add_special_tokens=False)
    assert encoded["input_ids"] == [2, 3, 4]
    assert encoded["offset_mapping"] == [(0, 1), (2, 5), (6, 9)]


def test_directory_with_only_tokenizer_json(tmp_path) -> None:
    write_tokenizer_json(tmp_path / "tokenizer.json")
    assert load_tokenizer(source(str(tmp_path)))("red").input_ids == [3]


def test_directory_saved_with_save_pretrained_and_model_as_default(tmp_path) -> None:
    write_tokenizer_json(tmp_path / "tokenizer.json")
    saved = tmp_path / "saved"
    PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"), pad_token="[PAD]").save_pretrained(saved)
    tokenizer = load_tokenizer(HiddenStatesStudent(type="hidden_states", model=str(saved)))
    assert isinstance(tokenizer, PreTrainedTokenizerFast)
    assert tokenizer.pad_token_id == 1


def test_uncached_hub_tokenizer_is_a_source_error() -> None:
    with pytest.raises(ModelSourceError, match="hf download nobody-xyz/no-tokenizer"):
        load_tokenizer(source("nobody-xyz/no-tokenizer"))


def test_a_model_folder_saved_without_its_tokenizer_is_named_not_loaded_empty(tmp_path) -> None:
    # transformers builds a tokenizer of one token from a config.json alone: every prompt would be no tokens.
    (tmp_path / "config.json").write_text('{"model_type": "qwen3"}')
    (tmp_path / "notes.txt").write_text("not a tokenizer")
    with pytest.raises(ModelSourceError, match="no tokenizer files here") as caught:
        load_tokenizer(source(str(tmp_path)))
    assert "tokenizer.json" in str(caught.value) and "`tokenizer:`" in str(caught.value)


def test_a_tokenizer_that_turns_text_into_no_tokens_is_refused(tmp_path) -> None:
    empty = Tokenizer(models.BPE(vocab={"z": 0}, merges=[]))  # no unknown token: other characters vanish
    PreTrainedTokenizerFast(tokenizer_object=empty).save_pretrained(tmp_path)
    with pytest.raises(ModelSourceError, match="into no tokens"):
        load_tokenizer(source(str(tmp_path)))

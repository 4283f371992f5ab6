"""The shipped tiny tokenizers and prompt files are reproducible and behave like the tokenizers they stand in for."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from components.tokenizers.build_tiny import TINY_TOKENIZERS, TRAIN_PROMPTS, build_all
from components.tokenizers.make_prompts import write_prompt_files

REPO_ROOT = Path(__file__).resolve().parents[3]
SAMPLE = "A café in Zürich, 35mm close-up of a naïve dog (ǽ) at 4k -- 16:9!"


def shipped_files(directory: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(directory.iterdir()) if path.is_file()}


def test_rebuild_is_byte_identical(tmp_path):
    build_all(tmp_path, REPO_ROOT / TRAIN_PROMPTS)
    for spec in TINY_TOKENIZERS:
        shipped = shipped_files(REPO_ROOT / spec.directory)
        assert set(shipped) == {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
        assert shipped_files(tmp_path / spec.directory) == shipped, spec.directory


def test_prompt_files_regenerate_identically_and_are_disjoint(tmp_path):
    write_prompt_files(tmp_path)
    for name in ("train.txt", "eval.txt"):
        assert (tmp_path / name).read_bytes() == (REPO_ROOT / "data/prompts" / name).read_bytes()
    train = (REPO_ROOT / "data/prompts/train.txt").read_text(encoding="utf-8").splitlines()
    evaluation = (REPO_ROOT / "data/prompts/eval.txt").read_text(encoding="utf-8").splitlines()
    assert len(train) == 600 and len(evaluation) == 80
    assert not set(train) & set(evaluation)
    assert all(line.strip() == line and "  " not in line and line for line in train + evaluation)


@pytest.mark.parametrize("spec", TINY_TOKENIZERS, ids=lambda spec: spec.directory.name)
def test_offsets_point_into_the_original_text(spec):
    tokenizer = AutoTokenizer.from_pretrained(REPO_ROOT / spec.directory)
    encoding = tokenizer(SAMPLE, return_offsets_mapping=True, return_special_tokens_mask=True)
    previous_end = 0
    covered = set()
    for (start, end), special in zip(encoding["offset_mapping"], encoding["special_tokens_mask"], strict=True):
        if special:
            assert (start, end) == (0, 0)
            continue
        assert 0 <= start < end <= len(SAMPLE)
        assert start >= previous_end - 1, "offsets move forward (bytes of one character may share it)"
        previous_end = max(previous_end, end)
        covered.update(range(start, end))
    assert {i for i, char in enumerate(SAMPLE) if not char.isspace()} <= covered


def test_special_tokens_follow_the_real_tokenizers():
    t5 = AutoTokenizer.from_pretrained(REPO_ROOT / "data/tokenizers/tiny_t5")
    assert (t5.pad_token_id, t5.eos_token_id, t5.unk_token_id) == (0, 1, 2)
    assert t5("a dog")["input_ids"][-1] == t5.eos_token_id
    assert t5.convert_ids_to_tokens(t5("a dog")["input_ids"])[0].startswith("▁")

    qwen = AutoTokenizer.from_pretrained(REPO_ROOT / "data/tokenizers/tiny_qwen")
    assert qwen.pad_token == qwen.eos_token == "<|endoftext|>"
    assert qwen("a dog")["input_ids"][-1] == qwen.eos_token_id
    assert "Ġdog" in qwen.convert_ids_to_tokens(qwen("a dog")["input_ids"])
    assert 1500 <= len(qwen) <= 2100

    bert = AutoTokenizer.from_pretrained(REPO_ROOT / "tests/assets/tokenizers/tiny_wordpiece")
    ids = bert("Zürich")["input_ids"]
    assert ids[0] == bert.cls_token_id and ids[-1] == bert.sep_token_id
    assert any(token.startswith("##") for token in bert.convert_ids_to_tokens(ids))


@pytest.mark.parametrize("name", ["tiny_t5", "tiny_qwen"])
def test_ids_fit_the_tiny_recipes_vocab_size(name):
    """recipes/examples/*_tiny.yaml give both inline models vocab_size 2000."""
    assert len(AutoTokenizer.from_pretrained(REPO_ROOT / "data/tokenizers" / name)) <= 2000


def test_truncation_keeps_the_appended_eos():
    t5 = AutoTokenizer.from_pretrained(REPO_ROOT / "data/tokenizers/tiny_t5")
    ids = t5(SAMPLE, truncation=True, max_length=5)["input_ids"]
    assert len(ids) == 5 and ids[-1] == t5.eos_token_id

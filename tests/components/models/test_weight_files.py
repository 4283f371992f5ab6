"""A local model folder's weights are looked at (headers and sizes) before loading: missing or cut-off files are
named with what to do, instead of a SafetensorError from inside transformers."""

from __future__ import annotations

import json
import shutil

import pytest
from transformers import Qwen3Config, Qwen3Model

from components.models import ModelSourceError, build_model
from components.models.weight_files import weights_problem
from schemas.models import HiddenStatesStudent

TINY = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "head_dim": 8, "vocab_size": 99}  # fmt: skip


@pytest.fixture
def saved(tmp_path):
    folder = tmp_path / "model"
    Qwen3Model(Qwen3Config(**TINY)).save_pretrained(folder)
    return folder


def test_whole_weights_have_no_problem(saved):
    assert weights_problem(saved) is None


def test_a_cut_off_file_is_named_and_refused_before_transformers_reads_it(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    problem = weights_problem(saved)
    assert problem is not None and problem.startswith(f"{weights}: it is cut short")
    assert "download or copy the model again" in problem
    with pytest.raises(ModelSourceError, match="it is cut short"):
        build_model(HiddenStatesStudent(type="hidden_states", model=str(saved)), "student")


def test_a_folder_without_weights_says_what_it_looked_for(saved):
    (saved / "model.safetensors").unlink()
    assert "no weights here (no model.safetensors, model.safetensors.index.json or pytorch_model.bin)" in (
        weights_problem(saved) or ""
    )
    (saved / "pytorch_model.bin").write_bytes(b"")  # transformers' own format: not looked into
    assert weights_problem(saved) is None


def test_every_shard_an_index_names_is_checked(saved):
    shutil.move(saved / "model.safetensors", saved / "model-00001-of-00002.safetensors")
    names = {
        "embed_tokens.weight": "model-00001-of-00002.safetensors",
        "norm.weight": "model-00002-of-00002.safetensors",
    }
    (saved / "model.safetensors.index.json").write_text(json.dumps({"weight_map": names}))
    assert "model-00002-of-00002.safetensors: missing, though model.safetensors.index.json names it" in (
        weights_problem(saved) or ""
    )
    (saved / "model.safetensors.index.json").write_text("{}")
    assert "unreadable shard index" in (weights_problem(saved) or "")

"""Every hub id a command needs and this machine lacks is named at once, with the command that fetches them."""

from __future__ import annotations

from pathlib import Path

import pytest
from huggingface_hub import constants

from components.models.downloads import Needed, needed_from, not_downloaded, require_downloaded
from components.models.source import ModelSourceError
from schemas.models import ModelSource


def _cache_snapshot(cache: Path, hub_id: str) -> None:
    """What a finished `hf download` leaves in the cache: a ref to a commit and that commit's snapshot folder."""
    repo = cache / f"models--{hub_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snapshot = repo / "snapshots" / ("0" * 40)
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_local_folders_and_inline_configs_need_no_download(tmp_path):
    local = ModelSource(model=str(tmp_path))
    inline = ModelSource(config={"model_type": "qwen3"}, tokenizer=str(tmp_path))
    assert needed_from("student", local) == [] and needed_from("student", inline) == []


def test_a_separate_tokenizer_is_its_own_need_and_weights_can_be_left_out():
    teacher = ModelSource(model="google/t5-v1_1-xxl", tokenizer="org/tok", revision="abc")
    assert needed_from("teacher", teacher) == [
        Needed("teacher.model", "google/t5-v1_1-xxl", "abc"),
        Needed("teacher.tokenizer", "org/tok", "abc"),
    ]
    assert needed_from("teacher", teacher, weights=False) == [Needed("teacher.tokenizer", "org/tok", "abc")]


def test_only_what_the_cache_lacks_is_named_each_id_once(cache):
    _cache_snapshot(cache, "org/here")
    needs = [Needed("teacher.model", "org/gone", None), Needed("teacher.model", "org/gone", None),
             Needed("student.model", "org/here", None), Needed("student.tokenizer", "org/other", None)]  # fmt: skip
    assert not_downloaded(needs) == [
        Needed("teacher.model", "org/gone", None),
        Needed("student.tokenizer", "org/other", None),
    ]


def test_the_refusal_lists_every_missing_id_and_one_line_that_fetches_them(cache):
    needs = [Needed("teacher.model", "org/big", None), Needed("student.model", "org/small", "v2")]
    with pytest.raises(ModelSourceError) as caught:
        require_downloaded(needs, "the run")
    assert str(caught.value) == (
        "the run needs what this machine has not downloaded: teacher.model 'org/big', student.model 'org/small'; "
        "fetch them with `hf download org/big && hf download org/small --revision v2` (or point the recipe at "
        "local folders)"
    )
    _cache_snapshot(cache, "org/big")
    with pytest.raises(ModelSourceError, match="student.model 'org/small'; fetch it with"):
        require_downloaded(needs, "the run")


def test_a_folder_in_the_current_directory_is_never_taken_for_a_hub_id_but_is_pointed_out(cache, tmp_path, monkeypatch):
    from components.models.source import locate

    (tmp_path / "toks" / "qwen").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    assert locate("toks/qwen").kind == "hub", "the same recipe must mean the same models from any directory"
    with pytest.raises(ModelSourceError) as caught:
        require_downloaded([Needed("student.tokenizer", "toks/qwen", None)], "align-report")
    assert str(caught.value).endswith(
        "; toks/qwen is also a folder in the current directory, but a recipe's paths are read from the recipe file's "
        "folder, so that it means the same wherever it runs: write the path from there (./ or ../) or an absolute one"
    )

"""weights_fingerprint: names, sizes and sampled contents of a teacher's weight files, on disk or in the local HF
cache."""

from __future__ import annotations

import os
from pathlib import Path

from components.cache.weights import weights_fingerprint
from schemas.models import ModelSource


def _model_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text('{"model_type": "t5"}')
    (path / "model.safetensors").write_bytes(b"\0" * 64)
    (path / "tokenizer.json").write_text("{}")
    return path


def _source(model: str) -> ModelSource:
    return ModelSource(model=model)


def test_an_inline_config_or_a_missing_path_has_none():
    assert weights_fingerprint(ModelSource(config={"model_type": "t5"}, tokenizer="x")) is None
    assert weights_fingerprint(_source("/no/such/teacher")) is None


def test_new_weights_change_it_and_other_files_and_file_times_do_not(tmp_path):
    model = _model_dir(tmp_path / "teacher")
    before = weights_fingerprint(_source(str(model)))
    assert before is not None and before.startswith("content:") and before == weights_fingerprint(_source(str(model)))
    (model / "tokenizer.json").write_text('{"changed": true}')
    assert weights_fingerprint(_source(str(model))) == before
    stat = (model / "model.safetensors").stat()
    os.utime(model / "model.safetensors", (stat.st_atime, stat.st_mtime + 3600))
    assert weights_fingerprint(_source(str(model))) == before, "touched, or copied without its times"

    (model / "model.safetensors").write_bytes(b"\1" * 64)
    rewritten = weights_fingerprint(_source(str(model)))
    assert rewritten != before, "same size, other bytes"
    (model / "model.safetensors").write_bytes(b"\1" * 65)
    assert weights_fingerprint(_source(str(model))) not in (before, rewritten)
    (model / "pytorch_model.bin").write_bytes(b"\0")
    assert weights_fingerprint(_source(str(model))) not in (before, rewritten)


def test_a_copy_elsewhere_is_the_same_teacher_and_a_change_in_one_layer_of_a_large_file_is_seen(tmp_path):
    """A 16 MiB file: only its sampled slices are read, and a LoRA-style change to 1/8 of it lands in some."""
    import shutil

    model = _model_dir(tmp_path / "teacher")
    size = 16 * 1024 * 1024
    (model / "model.safetensors").write_bytes(bytes(range(256)) * (size // 256))
    before = weights_fingerprint(_source(str(model)))
    copy = tmp_path / "scratch" / "teacher"
    shutil.copytree(model, copy, copy_function=shutil.copyfile)  # no times kept
    assert weights_fingerprint(_source(str(copy))) == before
    with (copy / "model.safetensors").open("r+b") as handle:
        handle.seek(5 * size // 8)
        handle.write(b"\xff" * (size // 8))
    assert weights_fingerprint(_source(str(copy))) != before


def test_a_hub_id_uses_its_snapshot_in_the_local_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert weights_fingerprint(_source("org/teacher")) is None, "not downloaded: unknown"
    repo = tmp_path / "hub" / "models--org--teacher"
    snapshot = _model_dir(repo / "snapshots" / "abc123")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    local = weights_fingerprint(_source(str(snapshot)))
    assert weights_fingerprint(_source("org/teacher")) == local
    assert weights_fingerprint(ModelSource(model="org/teacher", revision="abc123")) == local
    (snapshot / "model.safetensors").write_bytes(b"\1" * 80)
    assert weights_fingerprint(_source("org/teacher")) != local


def test_a_hub_commit_downloaded_twice_is_one_teacher_and_an_older_manifests_times_prove_nothing(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from components.cache.manifest import mismatches

    commit = "0123456789abcdef0123456789abcdef01234567"
    taken = []
    for machine, offset in (("a", 0), ("b", 3600)):  # the same commit, downloaded an hour apart
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / machine))
        repo = tmp_path / machine / "models--org--teacher"
        snapshot = _model_dir(repo / "snapshots" / commit)
        os.utime(snapshot / "model.safetensors", (1e9 + offset, 1e9 + offset))
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        taken.append(weights_fingerprint(_source("org/teacher")))
    assert taken[0] == taken[1] == f"commit:{commit}"
    identity = {"teacher": "org/teacher", "teacher_path": "org/teacher", "weights": taken[0]}
    assert mismatches({"identity": {**identity, "weights": "3f2a9c0d1e4b5a6c"}}, identity) == []  # by file times
    assert mismatches({"identity": {**identity, "weights": "content:3f2a9c0d1e4b5a6c"}}, identity) == []
    other = mismatches({"identity": {**identity, "weights": "commit:" + "f" * 40}}, identity)
    assert other and "the teacher's weights in org/teacher changed" in other[0]

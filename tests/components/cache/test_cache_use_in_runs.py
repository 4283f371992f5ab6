"""What a run takes from a complete cache, and what it refuses: a shard of another cache, a teacher it would
load only for one tensor, and a cache that lacks splits or shards (said in the live-teacher note)."""

from __future__ import annotations

import shutil

import pytest
import torch
from tiny_cache import SHARD
from tiny_cache import load_cache_recipe as _load

from components.cache.reader import CacheDamagedError, CachedTeacher
from components.cache.writer import shard_name
from components.models import build_model
from recipe_runner.teacher_cache import build_teacher_cache
from recipe_runner.trainer.parts import build_parts


def test_a_shard_copied_in_from_another_cache_is_refused_by_a_run_and_encoded_again(copy, tmp_path):
    """Its header, size and own sums all check out: only the manifest digest it carries tells it apart."""
    recipe, cache_dir = copy
    other_dir = tmp_path / "other" / "cache"
    build_teacher_cache(_load(other_dir, "hardware.seed=5"), batch_tokens=96, progress=False)  # another teacher
    victim = cache_dir / "train" / shard_name(1)
    before = [CachedTeacher(cache_dir / "train")[i].clone() for i in range(SHARD, 2 * SHARD)]
    shutil.copyfile(other_dir / "train" / shard_name(1), victim)
    with pytest.raises(CacheDamagedError, match="it was written for another cache .other prompts or another teacher"):
        CachedTeacher(cache_dir / "train")

    reports = build_teacher_cache(recipe, progress=False)
    assert reports["train"]["shards_written"] == 1 and reports["train"]["rewritten"][0].startswith(f"{victim} (")
    after = CachedTeacher(cache_dir / "train")
    for offset, tensor in enumerate(before):
        torch.testing.assert_close(after[SHARD + offset], tensor, atol=1e-5, rtol=1e-5)


def test_a_complete_cache_of_a_saved_teacher_reads_only_its_final_norm(tmp_path, monkeypatch):
    """Its weights are never built: the bolt-on's RMSNorm gets the one tensor, read from the teacher's files."""
    from components.models import final_norm

    teacher_dir = tmp_path / "teacher"
    saved = build_model(_load(tmp_path / "inline").teacher, "teacher", seed=0)
    final_norm(saved).weight.data = torch.linspace(0.5, 1.5, final_norm(saved).weight.numel())
    saved.save_pretrained(teacher_dir)
    at_path = ("teacher.config=null", f"teacher.model={teacher_dir}")
    recipe = _load(tmp_path / "cache", *at_path)
    build_teacher_cache(recipe, batch_tokens=96, progress=False)

    def no_teacher(source, role, **kwargs):
        if role == "teacher" and not kwargs.get("meta"):
            raise AssertionError("a fully cached teacher is not built")
        return build_model(source, role, **kwargs)

    monkeypatch.setattr("components.models.final_norm_weight.build_model", no_teacher)
    monkeypatch.setattr("recipe_runner.trainer.parts.build_model", no_teacher)
    parts = build_parts(recipe, torch.device("cpu"))
    assert parts.teacher is None
    torch.testing.assert_close(parts.model.bolt_on.layers[-1].weight.detach(), final_norm(saved).weight.detach())


def test_the_live_teacher_note_names_what_the_cache_lacks(copy):
    from recipe_runner.next_commands import FROM_PYTHON
    from recipe_runner.trainer.parts import live_teacher_note

    recipe, cache_dir = copy
    (cache_dir / "eval" / shard_name(0)).unlink()
    note = live_teacher_note(recipe, FROM_PYTHON)
    assert f"holds no complete cache (eval: cache {cache_dir / 'eval'} is incomplete (1 of 1 shards missing)" in note
    shutil.rmtree(cache_dir / "train")
    assert "(train: not written; eval: cache " in live_teacher_note(recipe, FROM_PYTHON)


def test_the_size_reported_is_of_the_splits_own_shards_not_a_stray_file(copy):
    recipe, cache_dir = copy
    own = sum(path.stat().st_size for path in (cache_dir / "train").glob("shard-*.safetensors"))
    (cache_dir / "train" / "shard-00099.safetensors").write_bytes(b"\0" * 4096)  # left from another layout
    assert build_teacher_cache(recipe, progress=False)["train"]["bytes"] == own

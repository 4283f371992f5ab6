"""`recipe cache --reuse-from`: a cache of edited prompts copies the rows of the prompts an earlier cache holds."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner
from safetensors import safe_open
from tiny_cache import EVAL, PROMPTS, SHARD, TINY, TRAIN
from tiny_cache import load_cache_recipe as _load

import recipe_runner.teacher_cache as teacher_cache
from components.cache.reader import CachedTeacher
from components.cache.reuse import CacheReuseError
from components.cache.shards import PROMPTS_KEY, shard_name
from components.data.prompts import prompt_key
from recipe_runner.cli import main
from recipe_runner.errors import RecipeError
from recipe_runner.teacher_cache import CacheSetupError, build_teacher_cache
from recipe_runner.trainer.parts import split_prompts


def _edited(recipe, tmp_path):
    """The train prompts with the second one reworded and two added at the end, written as a data file."""
    train, _ = split_prompts(recipe)
    edited = [train[0], "a heron standing in a misty river at dawn", *train[2:], "a lighthouse in a storm", "a kite"]
    file = tmp_path / "edited.txt"
    file.write_text("\n".join(edited) + "\n", encoding="utf-8")
    return edited, f"data.train={{path: {file}, limit: {len(edited)}}}"


def test_shards_name_their_prompts_in_order(built):
    recipe, cache_dir, _ = built
    train, _ = split_prompts(recipe)
    with safe_open(str(cache_dir / "train" / shard_name(1)), framework="pt") as handle:
        keys = handle.metadata()[PROMPTS_KEY]
    assert keys == "".join(prompt_key(p) for p in train[SHARD : 2 * SHARD])


def test_edited_prompts_copy_the_unchanged_rows_and_encode_only_the_others(built, tmp_path):
    recipe, old_dir, _ = built
    edited, data = _edited(recipe, tmp_path)
    new_dir = tmp_path / "new"
    new = _load(new_dir, data)
    reports = build_teacher_cache(new, progress=False, reuse_from=old_dir)
    assert reports["train"]["reused"] == TRAIN - 1, "every prompt but the reworded one"
    assert reports["eval"]["reused"] == EVAL and reports["eval"]["tokens"] == 0
    old, got = CachedTeacher(old_dir / "train"), CachedTeacher(new_dir / "train")
    assert len(got) == TRAIN + 2
    for index in [0, *range(2, TRAIN)]:
        assert torch.equal(got[index], old[index]), "copied, not encoded again"

    fresh_dir = tmp_path / "fresh"
    fresh_reports = build_teacher_cache(_load(fresh_dir, data), progress=False)
    fresh = CachedTeacher(fresh_dir / "train")
    for index in range(len(edited)):
        torch.testing.assert_close(got[index], fresh[index], atol=1e-5, rtol=1e-5)
    encoded = fresh_reports["train"]["tokens"] - reports["train"]["tokens"]
    assert reports["train"]["tokens"] > 0 and encoded > 0, "only the new prompts' tokens were encoded"


def test_a_cache_of_prompts_all_held_elsewhere_never_builds_the_teacher(built, tmp_path, monkeypatch):
    recipe, old_dir, _ = built
    train, held_out = split_prompts(recipe)
    file = tmp_path / "moved.txt"
    file.write_text("\n".join([*held_out, *reversed(train)]) + "\n", encoding="utf-8")  # eval prompts moved to train
    new = _load(tmp_path / "new", f"data.train={{path: {file}, limit: {TRAIN + EVAL}}}", "data.eval=null")

    def no_teacher(*args, **kwargs):
        raise AssertionError("the teacher was built")

    monkeypatch.setattr(teacher_cache, "build_model", no_teacher)
    reports = build_teacher_cache(new, progress=False, reuse_from=old_dir)
    assert reports["train"]["reused"] == TRAIN + EVAL and reports["train"]["tokens"] == 0
    got, old = CachedTeacher(tmp_path / "new" / "train"), CachedTeacher(old_dir / "eval")
    assert torch.equal(got[0], old[0])


def test_rows_of_a_damaged_shard_are_encoded_and_the_shard_named(copy, tmp_path):
    recipe, old_dir = copy
    victim = old_dir / "train" / shard_name(0)
    size = victim.stat().st_size
    with open(victim, "r+b") as handle:  # bytes of the data section changed, header and size intact
        handle.seek(size - 64)
        handle.write(bytes(64))
    _, data = _edited(recipe, tmp_path)
    new_dir = tmp_path / "new"
    reports = build_teacher_cache(_load(new_dir, data), progress=False, reuse_from=old_dir)
    assert reports["train"]["reused"] == TRAIN - SHARD, "shard 0's prompts (the reworded one among them) encoded"
    assert any(str(victim) in note and "SHA-256" in note for note in reports["train"]["not_reused"])
    fresh_dir = tmp_path / "fresh"
    build_teacher_cache(_load(fresh_dir, data), progress=False)
    got, fresh = CachedTeacher(new_dir / "train"), CachedTeacher(fresh_dir / "train")
    for index in range(SHARD):
        torch.testing.assert_close(got[index], fresh[index], atol=1e-5, rtol=1e-5)


def test_a_cache_made_with_other_teacher_settings_is_refused_naming_them(built, tmp_path):
    _, old_dir, _ = built
    other = _load(tmp_path / "new", "teacher.max_length=64")
    with pytest.raises(CacheReuseError, match="other settings.*teacher.max_length is 64 in the recipe but was"):
        build_teacher_cache(other, progress=False, reuse_from=old_dir)
    assert not list((tmp_path / "new").glob("*/manifest.json")), "no split started"


def test_reusing_into_the_same_directory_is_refused(copy):
    recipe, cache_dir = copy
    for source in (cache_dir, cache_dir / "train"):
        with pytest.raises(CacheSetupError, match="is teacher.cache.dir itself .*never rewritten in place"):
            build_teacher_cache(recipe, progress=False, reuse_from=source)


def test_shards_that_name_no_prompts_cannot_be_reused(copy, tmp_path):
    from safetensors.torch import load_file, save_file

    _, old_dir = copy
    for shard in old_dir.glob("*/shard-*.safetensors"):  # as written before shards named their prompts
        with safe_open(str(shard), framework="pt") as handle:
            metadata = {k: v for k, v in handle.metadata().items() if k != PROMPTS_KEY}
        save_file(load_file(shard), shard, metadata=metadata)
    with pytest.raises(
        CacheReuseError, match="written before shards named their prompts.*rerun `recipe cache` in full"
    ):
        build_teacher_cache(_load(tmp_path / "new"), progress=False, reuse_from=old_dir)
    with pytest.raises(CacheReuseError, match="no such directory"):
        build_teacher_cache(_load(tmp_path / "new"), progress=False, reuse_from=tmp_path / "nothing")


def test_validate_offers_reuse_for_edited_prompts(built, tmp_path):
    recipe, cache_dir, _ = built
    _, data = _edited(recipe, tmp_path)
    with pytest.raises(RecipeError, match=f"--reuse-from {cache_dir}"):
        _load(cache_dir, data)


def test_the_cache_command_reports_what_it_copied(built, tmp_path):
    recipe, old_dir, _ = built
    _, data = _edited(recipe, tmp_path)
    sets = [
        f"teacher.cache.dir={tmp_path / 'new'}",
        f"teacher.cache.shard_size={SHARD}",
        data,
        f"data.eval={{path: {PROMPTS / 'eval.txt'}, limit: {EVAL}}}",
        f"output.dir={tmp_path / 'run'}",
    ]
    args = ["cache", str(TINY), *(w for s in sets for w in ("--set", s)), "--reuse-from", str(old_dir), "--no-progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"train: {TRAIN + 2} prompts, 3 shard(s) written, {TRAIN - 1} prompts copied from the earlier cache" in (
        result.output
    )
    assert f"eval: {EVAL} prompts, 1 shard(s) written, {EVAL} prompts copied" in result.output
    manifest = json.loads((tmp_path / "new" / "train" / "manifest.json").read_text())
    assert manifest["count"] == TRAIN + 2


def test_the_cache_command_takes_teacher_answers_of_unchanged_prompts(tmp_path):
    recipe = TINY.parent / "qwen_sequence_kd_tiny.yaml"
    train = [line for line in (PROMPTS / "train.txt").read_text().splitlines() if line.strip()][:6]
    edited = tmp_path / "edited.txt"
    edited.write_text("\n".join([*train[:5], "a heron in the mist"]) + "\n", encoding="utf-8")

    def cache(answers, data, *flags):
        sets = [f"teacher.answers.dir={tmp_path / answers}", f"data.train={{path: {data}, limit: 6}}", "data.eval=null"]
        args = ["cache", str(recipe), *(w for s in sets for w in ("--set", s)), "--no-progress", *flags]
        return CliRunner().invoke(main, args)

    def answers(folder):
        return [json.loads(line) for line in (tmp_path / folder / "train.jsonl").read_text().splitlines()]

    assert cache("old", PROMPTS / "train.txt").exit_code == 0
    reused = cache("new", edited, "--reuse-from", str(tmp_path / "old"))
    assert reused.exit_code == 0, reused.output
    assert answers("new")[:5] == answers("old")[:5] and answers("new")[5]["prompt"] == prompt_key("a heron in the mist")
    refused = cache("old", PROMPTS / "train.txt", "--reuse-from", str(tmp_path / "old"))
    assert refused.exit_code != 0 and "is teacher.answers.dir itself" in refused.output


def test_a_folder_of_caches_and_a_shard_cut_short_are_named(copy, tmp_path):
    recipe, old_dir = copy
    with pytest.raises(CacheReuseError, match="it is no teacher.cache.dir .*give one, or one of its splits"):
        build_teacher_cache(_load(tmp_path / "new"), progress=False, reuse_from=old_dir.parent)
    victim = old_dir / "train" / shard_name(1)
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 2])
    reports = build_teacher_cache(_load(tmp_path / "new"), progress=False, reuse_from=old_dir)
    assert any(note.startswith(f"{victim}: ") for note in reports["train"]["not_reused"])
    assert reports["train"]["reused"] == TRAIN - SHARD


def test_a_finished_cache_rerun_after_its_source_was_deleted_only_checks_out(built, tmp_path):
    recipe, old_dir, _ = built
    _, data = _edited(recipe, tmp_path)
    copied = tmp_path / "old"
    shutil.copytree(old_dir, copied)
    new = _load(tmp_path / "new", data)
    build_teacher_cache(new, progress=False, reuse_from=copied)
    shutil.rmtree(copied)
    again = build_teacher_cache(new, progress=False, reuse_from=copied)
    assert again["train"]["shards_written"] == 0 and again["train"]["reused"] == 0

"""Teacher cache on the tiny recipe: shards + manifest, equality with the online teacher, resume, refusals."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from tiny_cache import EVAL, PROMPTS, SHARD, TINY, TRAIN
from tiny_cache import load_cache_recipe as _load

from components.alignment import CrossTokenizerAligner
from components.cache.manifest import teacher_identity
from components.cache.reader import CacheDamagedError, CachedTeacher, CacheIncompleteError
from components.cache.writer import CacheMismatchError, prepare_split, shard_name
from components.data.pipeline import Collator, PromptPairs
from components.data.prompts import prompts_digest
from components.models import build_model, freeze, load_tokenizer
from components.teacher_outputs import encode_teacher
from recipe_runner.errors import RecipeError
from recipe_runner.loader import load_recipe
from recipe_runner.teacher_cache import CACHE_LOCK, CacheSetupError, build_teacher_cache
from recipe_runner.trainer.parts import RunSetupError, build_parts, split_prompts


def test_writes_shards_and_a_manifest_per_split(built):
    recipe, cache_dir, reports = built
    assert sorted(p.name for p in cache_dir.iterdir()) == [CACHE_LOCK, "eval", "train"]
    train_files = sorted(p.name for p in (cache_dir / "train").iterdir())
    assert train_files == ["manifest.json", shard_name(0), shard_name(1), shard_name(2)]
    assert sorted(p.name for p in (cache_dir / "eval").iterdir()) == ["manifest.json", shard_name(0)]
    assert reports["train"]["count"] == TRAIN and reports["train"]["shards_written"] == 3
    assert reports["eval"]["count"] == EVAL and reports["eval"]["shards_written"] == 1
    manifest = json.loads((cache_dir / "train" / "manifest.json").read_text())
    train, _ = split_prompts(recipe)
    assert manifest["count"] == TRAIN and manifest["shard_size"] == SHARD
    assert manifest["prompts_sha256"] == prompts_digest(train)
    assert manifest["identity"] == json.loads(json.dumps(teacher_identity(recipe)))
    assert len(CachedTeacher(cache_dir / "train")) == TRAIN


def test_no_temporary_files_remain(built):
    _, cache_dir, _ = built
    leftovers = [p for p in cache_dir.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".")]
    assert leftovers == [cache_dir / CACHE_LOCK]


def test_a_second_cache_into_the_same_directory_is_refused_and_a_killed_ones_partial_shard_removed(copy):
    from recipe_runner.trainer.parts import RunSetupError
    from recipe_runner.trainer.run_dir import DirectoryLock

    recipe, cache_dir = copy
    partial = cache_dir / "train" / f".{shard_name(1)}.k3x9.tmp"  # as a killed writer leaves it
    partial.write_bytes(b"\0" * 4096)
    held = DirectoryLock(cache_dir, CACHE_LOCK, "recipe cache", "point teacher.cache.dir elsewhere").acquire()
    try:
        with pytest.raises(RunSetupError, match=r"in use by another `recipe cache` \(pid \d+\)"):
            build_teacher_cache(recipe, progress=False)
        assert partial.exists(), "nothing is touched while another cache holds the directory"
    finally:
        held.release()
    build_teacher_cache(recipe, progress=False)
    assert not partial.exists()


def test_cached_hidden_states_equal_the_online_teacher(built):
    recipe, cache_dir, _ = built
    assert recipe.teacher.chroma_mask
    teacher = freeze(build_model(recipe.teacher, "teacher", seed=recipe.hardware.seed))
    teacher_tok, student_tok = load_tokenizer(recipe.teacher), load_tokenizer(recipe.student)
    train, _ = split_prompts(recipe)
    cache = CachedTeacher(cache_dir / "train")
    aligner = CrossTokenizerAligner(recipe.alignment)
    online = PromptPairs(train, student_tok, teacher_tok, aligner, 128, recipe.teacher.max_length)
    cached = PromptPairs(train, student_tok, teacher_tok, aligner, 128, recipe.teacher.max_length, cache)
    collate = Collator(student_tok.pad_token_id or 0, teacher_tok.pad_token_id or 0, True)
    rows = [0, 3, 4, 9]  # across three shards, in the order a training batch might take them
    online_batch = collate([online[i] for i in rows])
    cached_batch = collate([cached[i] for i in rows])
    assert online_batch.teacher_hidden is None
    expected = encode_teacher(teacher, online_batch.teacher_ids, online_batch.teacher_mask)
    assert cached_batch.teacher_hidden.shape == expected.shape

    for row, index in enumerate(rows):
        n = int(online_batch.teacher_mask[row].sum())
        stored = cache[index]
        assert stored.shape == (n + 1, 64), "real tokens plus exactly one (padding) position"
        torch.testing.assert_close(stored[:n], expected[row, :n], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stored[n], expected[row, n], atol=1e-5, rtol=1e-5)
        assert not cached_batch.teacher_hidden[row, n + 1 :].any(), "the batch's padding past the rows is zero"
        alone = encode_teacher(teacher, online_batch.teacher_ids[row : row + 1, :n], torch.ones(1, n, dtype=torch.bool))
        torch.testing.assert_close(stored[:n], alone[0], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cached_batch.teacher_hidden[row, : n + 1], stored)


def test_without_chroma_mask_only_real_tokens_are_kept(tmp_path):
    recipe = _load(tmp_path / "cache", "teacher.chroma_mask=false", "data.eval=null", "teacher.cache.shard_size=16")
    build_teacher_cache(recipe, batch_tokens=120, progress=False)
    tokenizer = load_tokenizer(recipe.teacher)
    train, _ = split_prompts(recipe)
    lengths = [len(ids) for ids in tokenizer(train, truncation=True, max_length=128)["input_ids"]]
    cache = CachedTeacher(tmp_path / "cache" / "train")
    assert [cache[i].shape[0] for i in range(len(cache))] == lengths
    assert not (tmp_path / "cache" / "eval").exists()


def test_a_deleted_shard_is_the_only_one_rewritten(copy):
    recipe, cache_dir = copy
    victim = cache_dir / "train" / shard_name(1)
    original = {name: (cache_dir / "train" / name).stat().st_mtime_ns for name in (shard_name(0), shard_name(2))}
    reference = CachedTeacher(cache_dir / "train")
    before = [reference[i].clone() for i in range(SHARD, 2 * SHARD)]
    victim.unlink()
    with pytest.raises(CacheIncompleteError, match="1 of 3 shards missing"):
        CachedTeacher(cache_dir / "train")

    reports = build_teacher_cache(recipe, batch_tokens=72, progress=False)

    assert reports["train"]["shards_written"] == 1
    assert reports["eval"]["shards_written"] == 0
    assert victim.is_file()
    for name, mtime in original.items():
        assert (cache_dir / "train" / name).stat().st_mtime_ns == mtime, f"{name} was rewritten"
    after = CachedTeacher(cache_dir / "train")
    for offset, tensor in enumerate(before):
        torch.testing.assert_close(after[SHARD + offset], tensor, atol=1e-5, rtol=1e-5)
    assert not [p for p in cache_dir.rglob("*") if p.name.endswith(".tmp")]


def _truncate(path: Path) -> None:
    os.truncate(path, 100)


def _overwrite_header(path: Path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(20)
        handle.write(os.urandom(40))


@pytest.mark.parametrize("damage", [_truncate, _overwrite_header])
def test_a_damaged_shard_stops_a_run_at_its_start_and_only_it_is_rewritten(copy, damage):
    recipe, cache_dir = copy
    victim = cache_dir / "train" / shard_name(1)
    others = [
        cache_dir / "train" / shard_name(0),
        cache_dir / "train" / shard_name(2),
        cache_dir / "eval" / shard_name(0),
    ]
    original = {path: path.stat().st_mtime_ns for path in others}
    reference = CachedTeacher(cache_dir / "train")
    before = [reference[i].clone() for i in range(SHARD, 2 * SHARD)]
    damage(victim)

    with pytest.raises(CacheDamagedError) as caught:
        CachedTeacher(cache_dir / "train")
    assert f"cache shard {victim} is damaged" in str(caught.value)
    assert str(caught.value).endswith("; `recipe cache` rewrites it")
    with pytest.raises(RunSetupError, match=shard_name(1)) as refused:
        build_parts(recipe, torch.device("cpu"))  # not a silent fall-back to the live teacher
    assert str(refused.value).endswith("with this run's settings: `recipe cache RECIPE`")

    reports = build_teacher_cache(recipe, batch_tokens=72, progress=False)

    assert reports["train"]["shards_written"] == 1 and reports["eval"]["shards_written"] == 0
    [rewritten] = reports["train"]["rewritten"]
    assert rewritten.startswith(f"{victim} (") and reports["eval"]["rewritten"] == []
    assert {path: path.stat().st_mtime_ns for path in others} == original, "only the damaged shard is rewritten"
    after = CachedTeacher(cache_dir / "train")
    for offset, tensor in enumerate(before):
        torch.testing.assert_close(after[SHARD + offset], tensor, atol=1e-5, rtol=1e-5)
    assert not [p for p in cache_dir.rglob("*") if p.name.endswith(".tmp")]


def test_values_changed_inside_a_shard_are_found_by_verify_and_only_that_shard_is_encoded_again(copy):
    from safetensors import safe_open

    recipe, cache_dir = copy
    victim, other = cache_dir / "train" / shard_name(1), cache_dir / "train" / shard_name(0)
    before = [CachedTeacher(cache_dir / "train")[i].clone() for i in range(SHARD, 2 * SHARD)]
    with safe_open(str(victim), framework="pt") as handle:
        assert len(handle.metadata()["sha256"]) == 64  # taken when it was written
    size, kept = victim.stat().st_size, other.stat().st_mtime_ns
    with open(victim, "r+b") as handle:  # a failing disk: bytes of the data section, header and size intact
        handle.seek(size - 64)
        handle.write(bytes(64))
    assert build_teacher_cache(recipe, progress=False)["train"]["shards_written"] == 0  # the cheap check passes it

    reports = build_teacher_cache(recipe, progress=False, verify=True)
    [rewritten] = reports["train"]["rewritten"]
    assert rewritten == f"{victim} (its values are not those it was written with (its SHA-256 differs))"
    assert reports["train"]["shards_written"] == 1 and other.stat().st_mtime_ns == kept
    after = CachedTeacher(cache_dir / "train")
    for offset, tensor in enumerate(before):
        torch.testing.assert_close(after[SHARD + offset], tensor, atol=1e-5, rtol=1e-5)
    assert build_teacher_cache(recipe, progress=False, verify=True)["train"]["rewritten"] == []


def test_a_shard_damaged_after_the_cache_was_opened_is_named_when_read(copy):
    _, cache_dir = copy
    cache = CachedTeacher(cache_dir / "train")
    _truncate(cache_dir / "train" / shard_name(2))
    with pytest.raises(CacheDamagedError, match=f"{shard_name(2)} is damaged .*`recipe cache` rewrites it"):
        cache[2 * SHARD]


def test_values_changed_in_place_are_named_when_read(copy):
    """Header and size check out when bytes are overwritten in place; NaN or inf in the rows gives it away."""
    import struct

    _, cache_dir = copy
    path = cache_dir / "train" / shard_name(1)
    data = bytearray(path.read_bytes())
    nan = struct.pack("<f", float("nan"))
    data[-len(nan) * 8 :] = nan * 8  # the end of the hidden rows (float32 in the tiny recipe) of its last prompt
    path.write_bytes(bytes(data))
    cache = CachedTeacher(cache_dir / "train")  # opens: nothing about the file's shape changed
    cache[SHARD]  # an untouched prompt of that shard reads as before
    last = SHARD + SHARD - 1
    said = rf"prompt {last}'s teacher outputs hold NaN or inf\); `recipe cache --verify` finds it"
    with pytest.raises(CacheDamagedError, match=said):
        cache[last]


def test_an_unreadable_manifest_is_named_by_the_reader(copy):
    _, cache_dir = copy
    (cache_dir / "train" / "manifest.json").write_text("{")
    with pytest.raises(CacheDamagedError, match="manifest.json cannot be read"):
        CachedTeacher(cache_dir / "train")


@pytest.fixture(scope="module")
def local_teacher(built, tmp_path_factory) -> Path:
    """The tiny random teacher saved as a model directory, as a real one would be given."""
    recipe, _, _ = built
    directory = tmp_path_factory.mktemp("teacher") / "t5"
    build_model(recipe.teacher, "teacher", seed=recipe.hardware.seed).save_pretrained(directory)
    return directory


def test_new_weights_at_the_same_path_are_refused_but_an_older_manifest_is_accepted(local_teacher, tmp_path):
    teacher = shutil.copytree(local_teacher, tmp_path / "teacher")
    at_path = ("teacher.config=null", f"teacher.model={teacher}")
    build_teacher_cache(_load(tmp_path / "cache", *at_path), batch_tokens=96, progress=False)
    _load(tmp_path / "cache", *at_path)

    weights = teacher / "model.safetensors"
    os.utime(weights, (weights.stat().st_atime, weights.stat().st_mtime + 60))
    _load(tmp_path / "cache", *at_path)  # touched (or copied without its times): the same weights
    tensors = load_file(weights)
    save_file({name: tensor + 1 for name, tensor in tensors.items()}, weights, metadata={"format": "pt"})
    with pytest.raises(RecipeError) as caught:
        _load(tmp_path / "cache", *at_path)
    [problem] = caught.value.problems
    assert f"the teacher's weights in {teacher} changed since the cache was written" in str(problem)
    assert "(eval and train)" in str(problem)

    for split in ("train", "eval"):  # as written before the cache recorded a weights fingerprint
        manifest_file = tmp_path / "cache" / split / "manifest.json"
        manifest = json.loads(manifest_file.read_text())
        del manifest["identity"]["weights"]
        manifest_file.write_text(json.dumps(manifest))
    _load(tmp_path / "cache", *at_path)


def test_a_recipe_with_another_max_length_is_refused_at_load(built):
    _, cache_dir, _ = built
    with pytest.raises(RecipeError) as caught:
        _load(cache_dir, "teacher.max_length=64")
    messages = [str(problem) for problem in caught.value.problems]
    assert messages and all("max_length" in message for message in messages)
    assert any("teacher.cache.dir" in message for message in messages)


def test_other_prompts_are_a_mismatch(built, tmp_path):
    recipe, cache_dir, _ = built
    identity = json.loads(json.dumps(teacher_identity(recipe)))
    train, _ = split_prompts(recipe)
    split_dir = cache_dir / "train"
    assert prepare_split(split_dir, identity, prompts_digest(train), TRAIN, SHARD)["count"] == TRAIN
    with pytest.raises(CacheMismatchError, match="prompts_sha256"):
        prepare_split(split_dir, identity, prompts_digest(["something else", *train[1:]]), TRAIN, SHARD)
    with pytest.raises(CacheMismatchError, match="shard_size"):
        prepare_split(split_dir, identity, prompts_digest(train), TRAIN, SHARD + 1)


def test_build_refuses_a_cache_of_other_prompts(copy):
    _, cache_dir = copy
    sets = [
        f"teacher.cache.dir={cache_dir}",
        f"teacher.cache.shard_size={SHARD}",
        f"output.dir={cache_dir.parent / 'run'}",
        f"data.train={{path: {PROMPTS / 'eval.txt'}, limit: {TRAIN}}}",
        "data.eval=null",
    ]
    with pytest.raises(RecipeError, match="made from other prompts than data.train now"):
        load_recipe(TINY, sets)  # validate says so first
    with pytest.raises(CacheSetupError, match="prompts_sha256"):
        build_teacher_cache(load_recipe(TINY, sets, check=False).recipe, progress=False)


def test_a_run_refuses_a_cache_of_other_prompts_even_of_the_same_count(copy):
    _, cache_dir = copy
    shuffled = _load(cache_dir, f"data.train={{path: {PROMPTS / 'eval.txt'}, limit: {TRAIN}}}", check=False)
    with pytest.raises(RunSetupError, match="other prompts than data.train"):
        build_parts(shuffled, torch.device("cpu"))
    fewer = _load(cache_dir, f"data.eval={{path: {PROMPTS / 'eval.txt'}, limit: {EVAL - 1}}}", check=False)
    with pytest.raises(RunSetupError, match="other prompts than data.eval"):
        build_parts(fewer, torch.device("cpu"))


def test_a_cache_without_manifest_or_shards_is_incomplete(tmp_path):
    with pytest.raises(CacheIncompleteError, match="no cache manifest"):
        CachedTeacher(tmp_path / "nothing")
    recipe = _load(tmp_path / "cache")
    train, _ = split_prompts(recipe)
    prepare_split(tmp_path / "cache" / "train", teacher_identity(recipe), prompts_digest(train), TRAIN, SHARD)
    with pytest.raises(CacheIncompleteError, match="3 of 3 shards missing"):
        CachedTeacher(tmp_path / "cache" / "train")


def test_require_without_a_cache_stops_the_run_setup(tmp_path):
    recipe = _load(tmp_path / "empty_cache", "teacher.cache.require=true")
    with pytest.raises(RunSetupError, match="recipe cache"):
        build_parts(recipe, torch.device("cpu"))


def test_a_complete_cache_replaces_the_teacher_in_a_run(built):
    recipe, _, _ = built
    parts = build_parts(recipe, torch.device("cpu"))
    assert parts.teacher is None
    assert parts.train.cache is not None and parts.eval is not None and parts.eval.cache is not None
    assert parts.train[2]["teacher_hidden"].shape[-1] == 64


class _IdsAsHidden(torch.nn.Module):
    """A stand-in teacher whose hidden state at a position is its token id: rows are easy to check."""

    def forward(self, input_ids, attention_mask):
        return type("Out", (), {"last_hidden_state": input_ids.float().unsqueeze(-1).repeat(1, 1, 3)})()


def test_background_shard_writes_keep_every_row_and_surface_a_failed_write(tmp_path, monkeypatch):
    import components.cache.writer as writer

    token_ids = [[5 + i] * (1 + i % 7) for i in range(10)]
    common = {"shard_size": 4, "batch_tokens": 8, "chroma_mask": False, "dtype": "float32", "pad_id": 0}
    report = writer.write_split(tmp_path / "ok", token_ids, _IdsAsHidden(), device=torch.device("cpu"), **common)
    assert report["shards_written"] == 3
    for shard in range(3):
        saved = load_file(str(tmp_path / "ok" / writer.shard_name(shard)))
        offsets = saved["offsets"].tolist()
        for row, first in enumerate(range(4 * shard, min(10, 4 * shard + 4))):
            rows = saved["hidden"][offsets[row] : offsets[row + 1]]
            assert rows.shape == (len(token_ids[first]), 3) and bool((rows == 5 + first).all())

    real_save = writer.save_safetensors_atomic

    def disk_full_on_second(final, tensors, metadata=None):
        if final.name == writer.shard_name(1):
            raise OSError("No space left on device")
        real_save(final, tensors, metadata=metadata)

    monkeypatch.setattr(writer, "save_safetensors_atomic", disk_full_on_second)
    with pytest.raises(OSError, match="No space left"):
        writer.write_split(tmp_path / "full", token_ids, _IdsAsHidden(), device=torch.device("cpu"), **common)
    assert (tmp_path / "full" / writer.shard_name(0)).is_file()
    assert not (tmp_path / "full" / writer.shard_name(1)).exists()


def test_a_full_disk_is_one_clear_error_and_a_rerun_goes_on(tmp_path, monkeypatch):
    import components.cache.writer as writer

    recipe = _load(tmp_path / "cache")
    real_save = writer.save_safetensors_atomic

    def disk_full_on_second(final, tensors, metadata=None):
        if final.name == writer.shard_name(1):
            raise OSError(28, "No space left on device")
        real_save(final, tensors, metadata=metadata)

    monkeypatch.setattr(writer, "save_safetensors_atomic", disk_full_on_second)
    with pytest.raises(CacheSetupError, match="No space left on device; the 1 finished shard") as caught:
        build_teacher_cache(recipe, batch_tokens=96, progress=False)
    assert "rerun `recipe cache RECIPE`" in str(caught.value)
    monkeypatch.setattr(writer, "save_safetensors_atomic", real_save)
    reports = build_teacher_cache(recipe, batch_tokens=96, progress=False)
    assert reports["train"]["shards_written"] == 2  # shard 0 was kept, shards 1 and 2 written now
    assert len(CachedTeacher(tmp_path / "cache" / "train")) == TRAIN


@pytest.mark.slow
def test_a_compiled_teacher_writes_the_same_cache(built, tmp_path, compile_backend):
    recipe, cache_dir, _ = built
    compiled_dir = tmp_path / "compiled"
    build_teacher_cache(_load(compiled_dir, "hardware.compile=true"), batch_tokens=96, progress=False)
    for split in ("train", "eval"):
        for shard in sorted((cache_dir / split).glob("shard-*")):
            eager, compiled = load_file(str(shard)), load_file(str(compiled_dir / split / shard.name))
            assert eager.keys() == compiled.keys()
            for key in eager:
                torch.testing.assert_close(compiled[key], eager[key], atol=1e-4, rtol=1e-4)


def test_a_run_reading_the_cache_and_a_cache_writing_it_exclude_each_other(copy):
    from recipe_runner.trainer.loop import Trainer
    from recipe_runner.trainer.run_dir import DirectoryLock

    recipe, cache_dir = copy
    trainer = Trainer(recipe, progress=False)  # reads the cache: shards replaced now would pair other targets
    try:
        assert trainer.parts.train.cache is not None
        with pytest.raises(RunSetupError, match=r"is being read by a `recipe run`: wait for it to end"):
            build_teacher_cache(recipe, progress=False)
        second = Trainer(
            recipe.model_copy(update={"output": recipe.output.model_copy(update={"dir": str(cache_dir / "r2")})})
        )
        second._release_locks()  # readers share the cache
    finally:
        trainer._release_locks()
    held = DirectoryLock(cache_dir, CACHE_LOCK, "recipe cache").acquire()
    try:
        with pytest.raises(RunSetupError, match=r"is being written by `recipe cache` \(pid \d+\): wait for it"):
            Trainer(recipe, progress=False)
    finally:
        held.release()
    build_teacher_cache(recipe, progress=False)  # no reader left


def test_a_run_whose_cache_is_incomplete_lets_a_cache_be_written_meanwhile(copy):
    from recipe_runner.trainer.loop import Trainer

    recipe, cache_dir = copy
    for split in ("train", "eval"):
        shutil.rmtree(cache_dir / split)
    trainer = Trainer(recipe, progress=False)  # the teacher runs live
    try:
        assert trainer.parts.train.cache is None and trainer.parts.eval.cache is None
        build_teacher_cache(recipe, progress=False)
    finally:
        trainer._release_locks()


def test_a_local_teacher_folder_that_moves_keeps_its_cache(local_teacher, tmp_path):
    teacher = shutil.copytree(local_teacher, tmp_path / "models" / "teacher")
    build_teacher_cache(_load(tmp_path / "cache", "teacher.config=null", f"teacher.model={teacher}"),
                        batch_tokens=96, progress=False)  # fmt: skip
    moved = shutil.move(str(tmp_path / "models"), str(tmp_path / "mounted" / "models"))  # a rename keeps mtimes
    _load(tmp_path / "cache", "teacher.config=null", f"teacher.model={Path(moved) / 'teacher'}")


class _NaNForToken(_IdsAsHidden):
    """Ids as hidden states, except that one token's are NaN (as a float16 T5 overflows on some prompts)."""

    def forward(self, input_ids, attention_mask):
        out = super().forward(input_ids, attention_mask)
        out.last_hidden_state[input_ids == 9] = float("nan")
        return out


def test_a_teacher_writing_nan_is_stopped_at_that_shard_naming_its_prompts(tmp_path):
    """A cache of NaN would stop every run that reads it, hours of encoding later: the shard is not written, the
    earlier ones are kept, and the message names the prompts and the likely cause."""
    import components.cache.writer as writer

    token_ids = [[5 + i] * (1 + i % 7) for i in range(10)]  # prompt 4 holds token 9, in shard 1
    common = {"shard_size": 4, "batch_tokens": 8, "chroma_mask": False, "pad_id": 0, "device": torch.device("cpu")}
    with pytest.raises(writer.CacheValuesError) as caught:
        writer.write_split(tmp_path / "nan", token_ids, _NaNForToken(), dtype="float32", **common)
    message = str(caught.value)
    assert "prompt(s) 4 of" in message and f"{writer.shard_name(1)} was not written" in message
    assert "weights may hold NaN" in message and "rerun `recipe cache`" in message
    assert (tmp_path / "nan" / writer.shard_name(0)).is_file()
    assert not (tmp_path / "nan" / writer.shard_name(1)).exists()
    assert not list((tmp_path / "nan").glob(".*tmp"))

    half = _NaNForToken()
    half.register_parameter("weight", torch.nn.Parameter(torch.zeros(1, dtype=torch.float16)))
    with pytest.raises(writer.CacheValuesError, match="runs in float16, where T5's activations overflow"):
        writer.write_split(tmp_path / "half", token_ids, half, dtype="bfloat16", **common)
    with pytest.raises(writer.CacheValuesError, match="cache.dtype float16 holds at most 65504"):
        writer.write_split(tmp_path / "cast", token_ids, _NaNForToken(), dtype="float16", **common)

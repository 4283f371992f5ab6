"""Disk a run keeps: the size formula against checkpoints really written, and the refusal before step one."""

from __future__ import annotations

import shutil
from collections import namedtuple
from pathlib import Path

import pytest
import torch

from components.disk_space import NotEnoughDiskSpace, bytes_under
from components.models import hidden_width, resolve_config
from recipe_runner.loader import load_recipe
from recipe_runner.plan import build_plan, format_plan
from recipe_runner.trainer import loop, resume
from recipe_runner.trainer.checkpoint import Position, save_checkpoint
from recipe_runner.trainer.disk_need import DiskNeed, check_disk_space, disk_need, stage_checkpoint_bytes
from recipe_runner.trainer.loop import Trainer
from recipe_runner.trainer.optim import build_optimizer
from recipe_runner.trainer.parts import build_distill_model
from recipe_runner.trainer.stage_setup import enter_stage, parameters_by_part

TWO_STAGES = Path(__file__).parents[2] / "assets" / "recipes" / "two_stage_tiny.yaml"
Usage = namedtuple("Usage", "total used free")
MIB = 1 << 20
BF16 = ("hardware.precision=bf16", "hardware.trained_weights=bf16_stochastic")


def _load(path: Path, tmp_path: Path, *extra: str):
    return load_recipe(path, [f"output.dir={tmp_path / 'run'}", f"teacher.cache.dir={tmp_path / 'c'}", *extra]).recipe


def _model(recipe):
    return build_distill_model(recipe, "cpu", hidden_width(resolve_config(recipe.teacher)))


def _written_checkpoint_bytes(recipe, stage_index: int, target: Path) -> int:
    """One optimizer step of the stage, so AdamW holds its moments, then a real checkpoint."""
    model, stage = _model(recipe), recipe.stages[stage_index]
    enter_stage(model, stage, "fp32")
    optimizer, scheduler, _ = build_optimizer(
        stage, parameters_by_part(model), 10, "cpu", recipe.hardware.trained_weights
    )
    ids = torch.randint(0, 50, (2, 6))
    model(ids, torch.ones_like(ids, dtype=torch.bool)).float().pow(2).mean().backward()
    optimizer.step()
    save_checkpoint(target, model, optimizer, scheduler, Position(), resume.run_record(recipe, "0" * 64))
    return bytes_under(target)


@pytest.mark.parametrize(
    ("recipe_file", "stage_index", "extra"),
    [
        ("tiny", 0, ()),  # student and bolt-on, float32 masters
        ("tiny", 0, BF16),
        ("two", 0, ()),  # the bolt-on alone
        ("two", 1, ()),  # the student through LoRA adapters
    ],
)
def test_the_formula_covers_a_written_checkpoint_within_its_allowance(
    tiny_recipe_path, tmp_path, recipe_file, stage_index, extra
):
    recipe = _load(tiny_recipe_path if recipe_file == "tiny" else TWO_STAGES, tmp_path, *extra)
    predicted = stage_checkpoint_bytes(_model(recipe), recipe.stages[stage_index])  # before the stage, as runs do
    written = _written_checkpoint_bytes(recipe, stage_index, tmp_path / "ckpt")
    assert written <= predicted <= written + MIB, (written, predicted)


def test_a_lora_stage_of_a_features_recipe_counts_the_moments_of_the_projections_it_trains(tmp_path):
    """The projections of hidden_states losses train beside the adapters, with AdamW moments of their own."""
    from recipe_runner.trainer.parts import build_trained_model

    features = Path(__file__).parents[3] / "recipes" / "examples" / "qwen_features_tiny.yaml"
    # A teacher 4096 wide: the projections' moments (2 MiB) outgrow the per-checkpoint allowance (1 MiB)
    wide = ["teacher.config.hidden_size=4096", "stages.0.student_lora={r: 4}"]
    recipe = load_recipe(features, [f"output.dir={tmp_path / 'run'}", *wide]).recipe
    model, stage = build_trained_model(recipe, "cpu"), recipe.stages[0]
    predicted = stage_checkpoint_bytes(model, stage)
    enter_stage(model, stage, "fp32")
    assert any(p.requires_grad for p in model.projections.parameters())
    optimizer, scheduler, _ = build_optimizer(stage, parameters_by_part(model), 10, "cpu", "fp32")
    sum(p.float().sum() for p in model.parameters() if p.requires_grad).backward()  # a gradient for each
    optimizer.step()
    save_checkpoint(tmp_path / "ckpt", model, optimizer, scheduler, Position(), resume.run_record(recipe, "0" * 64))
    written = bytes_under(tmp_path / "ckpt")
    assert written <= predicted <= written + MIB, (written, predicted)


def test_copies_follow_keep_last_best_and_whether_the_run_evaluates(tiny_recipe_path, tmp_path):
    def need(*extra: str) -> DiskNeed:
        recipe = _load(tiny_recipe_path, tmp_path, *extra)
        return disk_need(_model(recipe), recipe)

    assert need().copies == 4  # keep_last 2, the best, one being written
    assert need("output.keep_best=false").copies == 3
    assert need("data.eval=null", "data.eval_fraction=0").copies == 3  # no eval: no best
    assert need("output.keep_last=5").copies == 7
    assert need("output.export=false").export_bytes == 0
    full = need()
    assert full.total_bytes == max(4 * full.checkpoint_bytes, 3 * full.checkpoint_bytes + full.export_bytes)


def test_the_plan_sizes_the_disk_as_the_run_does(tiny_recipe_path, tmp_path):
    for recipe in (
        _load(tiny_recipe_path, tmp_path),
        _load(tiny_recipe_path, tmp_path, *BF16),
        _load(TWO_STAGES, tmp_path),
    ):
        plan = build_plan(recipe)  # meta tensors
        assert plan.disk == disk_need(_model(recipe), recipe)
        assert f"disk (output.dir): {plan.disk.describe()}" in format_plan(plan)
        # max(4 checkpoints, 3 and the export), not their sum: the line says why the figures do not add up
        assert plan.disk.describe().endswith("at most at any one time (the export is written once no checkpoint "
                                             "is being written)")  # fmt: skip


def test_checkpoints_already_on_disk_count_towards_what_is_kept(tmp_path, monkeypatch):
    need = DiskNeed(checkpoint_bytes=1000, keep_last=1, keeps_best=True, export_bytes=0)
    old = tmp_path / "checkpoints" / "step-00000010"
    old.mkdir(parents=True)
    (old / "model.safetensors").write_bytes(b"x" * 1000)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 0, 2000))
    check_disk_space(tmp_path, need)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 0, 1999))
    with pytest.raises(NotEnoughDiskSpace, match="needs 2,000 bytes more than is there now, and 1,999 bytes are free"):
        check_disk_space(tmp_path, need)


def test_checkpoints_linked_to_another_disk_are_sized_there(tmp_path, monkeypatch):
    need = DiskNeed(checkpoint_bytes=1000, keep_last=1, keeps_best=True, export_bytes=500)
    small = tmp_path / "small"
    small.mkdir()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoints").symlink_to(small)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 0, 100 if path == small else 10**9))
    with pytest.raises(NotEnoughDiskSpace, match=f"not enough disk space for {tmp_path / 'run' / 'checkpoints'}"):
        check_disk_space(tmp_path / "run", need)


def test_on_two_disks_checkpoints_and_export_are_each_sized_on_their_own(tmp_path, monkeypatch):
    from recipe_runner.trainer import disk_need as module

    need = DiskNeed(checkpoint_bytes=1000, keep_last=1, keeps_best=True, export_bytes=500)
    monkeypatch.setattr(module, "same_disk", lambda first, second: False)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 0, 3000))
    check_disk_space(tmp_path, need)  # 3000 for the checkpoints; the export's 500 is on the other disk
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 0, 400))
    with pytest.raises(NotEnoughDiskSpace, match="this run keeps up to 3 checkpoints"):
        check_disk_space(tmp_path, need)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 0, 3000 if path.name == "checkpoints" else 400))
    (tmp_path / "checkpoints").mkdir()
    with pytest.raises(NotEnoughDiskSpace, match=f"for {tmp_path / 'export'}: the export at the end takes 500 bytes"):
        check_disk_space(tmp_path, need)


def test_a_read_only_checkpoints_folder_is_refused_before_anything_loads(tmp_path, monkeypatch):
    import errno
    import tempfile

    from components.disk_space import NotWritable

    (tmp_path / "checkpoints").mkdir()

    def read_only(dir):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(tempfile, "TemporaryFile", read_only)
    need = DiskNeed(checkpoint_bytes=1, keep_last=1, keeps_best=False, export_bytes=0)
    with pytest.raises(NotWritable) as caught:
        check_disk_space(tmp_path, need)
    assert str(caught.value) == (
        f"cannot write into {tmp_path / 'checkpoints'}: Read-only file system; the run's checkpoints go there; "
        "make it writable, or write elsewhere (--set output.dir=...)"
    )


def test_a_run_that_would_fill_the_disk_is_refused_before_it_writes_anything(
    tiny_recipe_path, tiny_overrides, tmp_path, monkeypatch
):
    recipe = load_recipe(tiny_recipe_path, tiny_overrides).recipe
    run_dir = tmp_path / "run"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 0, 5 * MIB))

    def no_loading(*args, **kwargs):
        raise AssertionError("models were loaded although the run cannot keep its checkpoints")

    with monkeypatch.context() as patch:
        patch.setattr(loop, "build_parts", no_loading)
        with pytest.raises(NotEnoughDiskSpace) as caught:
            Trainer(recipe, progress=False)
    message = str(caught.value)
    assert "up to 4 checkpoints of" in message and "(output.keep_last 2, the best, one being written)" in message
    assert "--set output.keep_last=1" in message and "5.0 MiB is free" in message
    assert sorted(p.name for p in run_dir.iterdir()) == [".recipe-run.lock"]
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 0, 1 << 40))
    Trainer(recipe, progress=False).lock.release()  # the refused run let go of the directory


def test_fewer_checkpoints_are_asked_for_only_where_the_recipe_keeps_more_than_the_least():
    least = DiskNeed(checkpoint_bytes=1000, keep_last=1, keeps_best=False, export_bytes=0)
    assert least.copies == 2 and least.fewer_checkpoints() == ""
    best_only = DiskNeed(checkpoint_bytes=1000, keep_last=1, keeps_best=True, export_bytes=0)
    assert best_only.fewer_checkpoints() == ", or keep fewer checkpoints (--set output.keep_best=false)"
    both = DiskNeed(checkpoint_bytes=1000, keep_last=3, keeps_best=True, export_bytes=0)
    assert both.copies == 5
    assert both.fewer_checkpoints() == (
        ", or keep fewer checkpoints (--set output.keep_last=1, --set output.keep_best=false)"
    )


def test_the_export_allowance_covers_a_written_export(tiny_recipe_path, tmp_path):
    from components.export import export_encoder
    from components.models import load_tokenizer

    recipe = _load(tiny_recipe_path, tmp_path)
    model = _model(recipe)
    predicted = disk_need(model, recipe).export_bytes
    written = bytes_under(
        export_encoder(tmp_path / "export", recipe, model.student, model.bolt_on, load_tokenizer(recipe.student))
    )
    assert written <= predicted <= written + MIB, (written, predicted)

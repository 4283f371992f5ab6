"""Checkpoints: exact resumption (weights, AdamW, schedule, RNG), atomic writes, discovery and pruning."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file as real_save_file
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from recipe_runner.trainer import checkpoint as ckpt
from recipe_runner.trainer.checkpoint import (
    COMPLETE,
    Position,
    checkpoint_name,
    load_checkpoint,
    prune,
    read_position,
    save_checkpoint,
    step_checkpoints,
)


def _setup(seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.3), nn.LayerNorm(8), nn.Linear(8, 3))
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2
    )
    scheduler = LambdaLR(optimizer, [lambda s: 1 / (1 + s), lambda s: 0.9**s])
    return model, optimizer, scheduler


def _step(model, optimizer, scheduler) -> list[float]:
    """One training step whose data, dropout and extra draws all consume the RNGs a resume must restore."""
    x = torch.randn(4, 6)
    scale = 1.0 + 0.1 * random.random() + 0.1 * float(np.random.rand())
    loss = (model(x) ** 2).mean() * scale
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return [loss.item(), random.random(), float(np.random.rand()), torch.rand(()).item()]


def _snapshot(model, optimizer, scheduler) -> dict:
    return {
        "weights": {k: v.clone() for k, v in model.state_dict().items()},
        "lrs": scheduler.get_last_lr(),
        "exp_avg": [optimizer.state[p]["exp_avg"].clone() for p in model.parameters()],
    }


def _assert_same(a: dict, b: dict) -> None:
    assert a["lrs"] == b["lrs"]
    for key in a["weights"]:
        assert torch.equal(a["weights"][key], b["weights"][key]), key
    for x, y in zip(a["exp_avg"], b["exp_avg"], strict=True):
        assert torch.equal(x, y)


def test_restore_continues_exactly_as_without_saving(tmp_path):
    model, optimizer, scheduler = _setup()
    random.seed(1)
    np.random.seed(2)
    for _ in range(2):
        _step(model, optimizer, scheduler)
    position = Position(stage=1, stage_step=2, global_step=7, epoch=1, batch=3, best_eval=0.25)
    save_checkpoint(tmp_path / "ck", model, optimizer, scheduler, position)
    straight = [_step(model, optimizer, scheduler) for _ in range(3)]
    expected = _snapshot(model, optimizer, scheduler)

    # A fresh process: other weights, other RNG positions, no optimizer state yet.
    model2, optimizer2, scheduler2 = _setup(seed=123)
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    restored = load_checkpoint(tmp_path / "ck", model2, optimizer2, scheduler2)
    assert restored == position
    resumed = [_step(model2, optimizer2, scheduler2) for _ in range(3)]

    assert resumed == straight
    _assert_same(_snapshot(model2, optimizer2, scheduler2), expected)
    assert optimizer2.state_dict()["param_groups"][0]["weight_decay"] == 0.01
    assert scheduler2.last_epoch == scheduler.last_epoch == 5


def test_checkpoint_is_safetensors_and_json_only(tmp_path):
    model, optimizer, scheduler = _setup()
    _step(model, optimizer, scheduler)
    save_checkpoint(tmp_path / checkpoint_name(1), model, optimizer, scheduler, Position(global_step=1))
    names = sorted(p.name for p in (tmp_path / "step-00000001").iterdir())
    assert names == ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json", COMPLETE]
    assert read_position(tmp_path / "step-00000001").global_step == 1
    assert [p.name for p in tmp_path.iterdir()] == ["step-00000001"], "no temporary directory left"


def _failing_save_file(calls_before_failure: int):
    calls = {"n": 0}

    def save_file(tensors, filename, metadata=None):
        calls["n"] += 1
        if calls["n"] > calls_before_failure:
            Path(filename).write_bytes(b"half a file")
            raise OSError("disk full")
        return real_save_file(tensors, filename, metadata=metadata)

    return save_file


def test_a_failed_write_leaves_nothing_under_the_final_name(tmp_path, monkeypatch):
    model, optimizer, scheduler = _setup()
    _step(model, optimizer, scheduler)
    monkeypatch.setattr(ckpt, "save_file", _failing_save_file(0))  # model written, optimizer fails halfway
    final = tmp_path / "checkpoints" / checkpoint_name(5)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(final, model, optimizer, scheduler, Position(global_step=5))
    assert not final.exists()
    assert list((tmp_path / "checkpoints").iterdir()) == [], "the temporary directory is cleaned up"
    assert step_checkpoints(tmp_path / "checkpoints") == []


def test_a_failed_write_keeps_the_older_checkpoint_of_the_same_name(tmp_path, monkeypatch):
    model, optimizer, scheduler = _setup()
    _step(model, optimizer, scheduler)
    best = tmp_path / "checkpoints" / "best"
    save_checkpoint(best, model, optimizer, scheduler, Position(global_step=1, best_eval=0.5))
    before = {p.name: p.read_bytes() for p in best.iterdir()}

    _step(model, optimizer, scheduler)
    monkeypatch.setattr(ckpt, "save_file", _failing_save_file(1))  # rng.safetensors fails this time
    with pytest.raises(OSError):
        save_checkpoint(best, model, optimizer, scheduler, Position(global_step=2, best_eval=0.4))

    assert {p.name: p.read_bytes() for p in best.iterdir()} == before
    assert sorted(p.name for p in best.parent.iterdir()) == ["best"]
    monkeypatch.undo()
    fresh, fresh_opt, fresh_sched = _setup(seed=5)
    assert load_checkpoint(best, fresh, fresh_opt, fresh_sched).best_eval == 0.5


def test_a_successful_write_replaces_the_older_checkpoint(tmp_path):
    model, optimizer, scheduler = _setup()
    best = tmp_path / "best"
    save_checkpoint(best, model, optimizer, scheduler, Position(global_step=1))
    _step(model, optimizer, scheduler)
    save_checkpoint(best, model, optimizer, scheduler, Position(global_step=2))
    assert read_position(best).global_step == 2
    assert [p.name for p in tmp_path.iterdir()] == ["best"], "the old copy is removed"


def _complete(directory: Path, step: int = 0) -> Path:
    directory.mkdir(parents=True)
    (directory / COMPLETE).write_text(json.dumps({"global_step": step}))
    return directory


def test_step_checkpoints_lists_only_complete_step_directories_oldest_first(tmp_path):
    root = tmp_path / "checkpoints"
    assert step_checkpoints(root) == []
    newest = _complete(root / checkpoint_name(12))
    oldest = _complete(root / checkpoint_name(3))
    (root / checkpoint_name(20)).mkdir()  # interrupted before trainer_state.json
    _complete(root / f".{checkpoint_name(30)}.abc123.tmp")  # a temporary directory
    _complete(root / "best")
    _complete(root / "step-7")
    (root / "step-00000040").write_text("a file, not a directory")
    assert step_checkpoints(root) == [oldest, newest]


def test_prune_keeps_the_newest_n(tmp_path):
    root = tmp_path / "checkpoints"
    made = [_complete(root / checkpoint_name(step)) for step in (50, 10, 40, 20, 30)]
    _complete(root / "best")
    unfinished = root / checkpoint_name(60)
    unfinished.mkdir()
    prune(root, keep_last=2)
    assert [p.name for p in step_checkpoints(root)] == [checkpoint_name(40), checkpoint_name(50)]
    assert (root / "best").is_dir()
    assert unfinished.is_dir(), "only complete step checkpoints are pruned"
    prune(root, keep_last=5)
    assert len(step_checkpoints(root)) == 2
    assert sum(p.exists() for p in made) == 2


def test_files_no_run_wrote_are_never_deleted_with_a_checkpoint(tmp_path, capsys):
    """A person's notes (or an export) put into a checkpoint folder: pruning keeps that folder, and `best` is not
    replaced over them; training goes on, and says so."""
    from accelerate import Accelerator

    from components.atomic_files import ForeignDirectoryError
    from recipe_runner.trainer.checkpoint_writer import CheckpointWriter

    model, optimizer, scheduler = _setup()
    root = tmp_path / "checkpoints"
    for step in (10, 20, 30):
        save_checkpoint(root / checkpoint_name(step), model, optimizer, scheduler, Position(global_step=step))
    (root / checkpoint_name(10) / "notes.txt").write_text("mine")
    (root / checkpoint_name(20) / ".checksums.json.k2j3h4g5.tmp").write_text("{")  # a kill mid-hash: ours
    assert prune(root, keep_last=1) == [root / checkpoint_name(10)]
    assert [p.name for p in step_checkpoints(root)] == [checkpoint_name(10), checkpoint_name(30)]
    save_checkpoint(root / "best", model, optimizer, scheduler, Position(global_step=30))
    (root / "best" / "my_export").mkdir()
    (root / "best" / "my_export" / "encoder.json").write_text("{}")
    with pytest.raises(ForeignDirectoryError, match=r"also holds my_export/encoder.json"):
        save_checkpoint(root / "best", model, optimizer, scheduler, Position(global_step=40))
    resume = "recipe run r.yaml --set output.dir=elsewhere --resume"
    writer = CheckpointWriter(Accelerator(cpu=True), root, keep_last=1, record={}, resume=resume)
    assert not writer.save(model, optimizer, scheduler, Position(global_step=40, best_eval=0.25), name="best")
    assert writer.save(model, optimizer, scheduler, Position(global_step=40))
    writer.wait()
    assert read_position(root / "best").global_step == 30 and (root / "best" / "my_export" / "encoder.json").is_file()
    assert (root / checkpoint_name(10) / "notes.txt").read_text() == "mine"
    err = capsys.readouterr().err
    assert (
        f"{root / 'best'} holds my_export/encoder.json, which no run wrote, so the weights of step 40 (eval/loss 0.25) "
        "were not kept there: move those files out of it; training goes on, and keeps the next better evaluation"
    ) in err
    assert "--resume" not in err  # this run's own lock would refuse a second run on the folder
    shutil.rmtree(root / "best")
    (root / "best").write_text("a file of mine")
    assert not writer.save(model, optimizer, scheduler, Position(global_step=50), name="best")
    assert (
        "best is not a checkpoint (a folder or file of yours?), so the weights of step 50 were"
        in capsys.readouterr().err
    )
    assert (root / "best").read_text() == "a file of mine"
    assert f"{root / checkpoint_name(10)} holds notes.txt, which no run wrote: kept, not pruned" in err


def test_a_prune_cut_short_leaves_a_temporary_name_that_the_next_run_deletes(tmp_path, monkeypatch):
    from recipe_runner.trainer.run_dir import tidy_checkpoints

    root = tmp_path / "checkpoints"
    for step in (10, 20):
        _complete(root / checkpoint_name(step))
        (root / checkpoint_name(step) / "model.safetensors").write_bytes(b"x" * 100)
    removes = shutil.rmtree

    def killed_half_way(path, ignore_errors=False):
        if Path(path).is_dir():
            (Path(path) / COMPLETE).unlink()
            raise KeyboardInterrupt  # stands in for a SIGKILL between two unlinks
        return removes(path, ignore_errors=ignore_errors)

    monkeypatch.setattr(ckpt.shutil, "rmtree", killed_half_way)
    with pytest.raises(KeyboardInterrupt):
        prune(root, keep_last=1)
    monkeypatch.undo()
    assert sorted(p.name for p in root.iterdir()) == [f".{checkpoint_name(10)}.pruned.tmp", checkpoint_name(20)]
    mine = root / f".{checkpoint_name(20)}-backup.tmp"  # a person's copy, in a name no run writes
    shutil.copytree(root / checkpoint_name(20), mine)
    writers = root / f".{checkpoint_name(30)}.k2j3h4g5.tmp"  # a checkpoint write a kill cut short
    writers.mkdir()
    tidy_checkpoints(root)
    assert sorted(p.name for p in root.iterdir()) == [mine.name, checkpoint_name(20)]

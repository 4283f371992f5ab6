"""Checkpoints in safetensors + JSON (no pickle), written under a temporary name and renamed when complete."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model

from components.atomic_files import atomic_directory
from recipe_runner.next_commands import FROM_PYTHON
from recipe_runner.trainer.checksums import SUMS
from recipe_runner.trainer.random_streams import State, for_checkpoint, process_state, restore

STEP_DIR = re.compile(r"^step-(\d{8})$")
COMPLETE = "trainer_state.json"
RECORD = "run_record.json"  # the resolved recipe and train-prompt digest it was trained with (see resume.py)
WRITTEN = frozenset({RECORD, "model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json", COMPLETE})
KEEP_YOURS = "replacing or pruning it would delete them"


@dataclass
class Position:
    """Where training stands: stage, optimizer step within it, and the next batch of the data order."""

    stage: int = 0
    stage_step: int = 0
    global_step: int = 0
    epoch: int = 0
    batch: int = 0
    epoch_batches: int | None = None  # batches in that epoch's order, to rescale `batch` if the batching changes
    best_eval: float | None = None
    eval_pending: bool = False  # a stop cut short the evaluation of global_step: `--resume` makes it first
    # [loss sum, micro-steps] since the last metrics line (over every process), so that the first line after a
    # resume averages the same steps as an uninterrupted run's
    loss_window: list[float] | None = None


def _optimizer_tensors(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value
            else:
                scalars[f"{index}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in [*tensors.items(), *meta["scalars"].items()]:
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def _json_default(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def added_to_checkpoint(directory: Path) -> list[str]:
    """What a checkpoint folder holds that no run wrote (a person's notes, an export put there): never deleted."""
    ours = WRITTEN | {SUMS}
    found = (path.relative_to(directory).as_posix() for path in directory.rglob("*") if not path.is_dir())
    return sorted(name for name in found if name not in ours and not _ours_half_written(name))


def _ours_half_written(name: str) -> bool:
    """A temporary copy of one of our files that a kill cut short (e.g. `.checksums.json.k2j3h4g5.tmp`)."""
    return name.endswith(".tmp") and any(name.startswith(f".{ours}.") for ours in WRITTEN | {SUMS})


def save_checkpoint(
    final: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    position: Position,
    record: dict | None = None,
    then: str = f"then continue with `{FROM_PYTHON.resume}`",
    random_states: list[State] | None = None,
) -> None:
    """All files go to a temporary directory that is renamed to `final` only once every file is written; `then`
    ends the message that refuses to replace a folder holding files no run wrote. `random_states`: every
    process's random streams, in process order (default: this process's alone)."""
    with atomic_directory(final, COMPLETE, "checkpoint", f"{then} ({KEEP_YOURS})", added_to_checkpoint) as tmp:
        if record is not None:
            (tmp / RECORD).write_text(json.dumps(record, indent=1))
        save_model(model, str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = _optimizer_tensors(optimizer.state_dict())
        save_file({k: v.contiguous() for k, v in opt_tensors.items()}, str(tmp / "optimizer.safetensors"))
        rng_tensors, rng_meta = for_checkpoint(random_states or [process_state()])
        save_file(rng_tensors, str(tmp / "rng.safetensors"))
        meta = {"optimizer": opt_meta, "scheduler": scheduler.state_dict(), "rng": rng_meta}
        (tmp / "state.json").write_text(json.dumps(meta, default=_json_default))
        (tmp / COMPLETE).write_text(json.dumps(asdict(position), indent=2))


def load_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    rank: int = 0,
    processes: int = 1,
) -> Position:
    """Restore model, optimizer, schedule and process `rank`'s random streams; returns where to continue."""
    load_model(model, str(directory / "model.safetensors"), device=str(next(model.parameters()).device))
    meta = read_state(directory)
    opt_tensors = load_file(str(directory / "optimizer.safetensors"), device="cpu")
    optimizer.load_state_dict(_optimizer_state(opt_tensors, meta["optimizer"]))
    scheduler.load_state_dict(meta["scheduler"])
    restore(load_file(str(directory / "rng.safetensors")), meta["rng"], rank, processes)
    return read_position(directory)


def read_state(directory: Path) -> dict:
    """state.json (optimizer, schedule and RNG settings), or a ValueError naming it."""
    path = directory / "state.json"
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(meta, dict) or not {"optimizer", "scheduler", "rng"} <= meta.keys():
        raise ValueError(f"{path}: not the optimizer, schedule and RNG state a checkpoint writes")
    return meta


_COUNTERS = ("stage", "stage_step", "global_step", "epoch", "batch")  # what every checkpoint has written


def read_position(directory: Path) -> Position:
    """A ValueError for anything but a position this module wrote: a default filled in for a missing counter
    would restart the stage, or the epoch, without a word."""
    path = directory / COMPLETE
    saved = json.loads(path.read_text())
    if not isinstance(saved, dict):
        raise ValueError(f"{path}: not a training position (a JSON {type(saved).__name__})")
    missing = [name for name in _COUNTERS if not isinstance(saved.get(name), int)]
    if missing:
        raise ValueError(f"{path}: no whole-number {', '.join(missing)}")
    negative = [name for name in _COUNTERS if saved[name] < 0]
    if negative:
        raise ValueError(f"{path}: negative {', '.join(negative)} (edited?)")
    known = saved.get("epoch_batches")
    if isinstance(known, int) and not 0 <= saved["batch"] <= known:
        raise ValueError(f"{path}: batch {saved['batch']} is past the {known} batches of its epoch (edited?)")
    try:
        return Position(**saved)
    except TypeError as exc:  # a key no version wrote
        raise ValueError(f"{path}: not a training position this version wrote ({exc})") from None


def read_record(directory: Path) -> dict | None:
    """The run record, or None for a checkpoint written before records existed; a ValueError for one of
    another shape (what resuming compares must be there)."""
    path = directory / RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    recipe = record.get("recipe") if isinstance(record, dict) else None
    stages = recipe.get("stages") if isinstance(recipe, dict) else None
    if not (
        isinstance(stages, list)
        and all(isinstance(stage, dict) and "name" in stage for stage in stages)
        and isinstance(recipe.get("hardware"), dict)
    ):
        raise ValueError(f"{path}: not a run record (it needs the recipe with its stages and hardware)")
    return record


def step_checkpoints(root: Path) -> list[Path]:
    """Complete step checkpoints, oldest first (temporary directories never match the name)."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if STEP_DIR.match(p.name) and (p / COMPLETE).is_file()]
    return sorted(found, key=lambda p: p.name)


def checkpoint_name(global_step: int) -> str:
    return f"step-{global_step:08d}"


def prune(root: Path, keep_last: int) -> list[Path]:
    """Delete all but the newest `keep_last` step checkpoints (the best one lives elsewhere), except those holding
    files no run wrote, which are returned (kept). Each is renamed to a temporary name first: one a kill cut
    short is then a leftover the next run deletes, not a broken step folder that stays."""
    kept = []
    for old in step_checkpoints(root)[:-keep_last]:
        if added_to_checkpoint(old):
            kept.append(old)
            continue
        doomed = old.with_name(f".{old.name}.pruned.tmp")
        shutil.rmtree(doomed, ignore_errors=True)  # what an earlier cut-short prune of this name left
        try:
            os.replace(old, doomed)
        except OSError:
            doomed = old
        shutil.rmtree(doomed, ignore_errors=True)
    return kept

"""What a run leaves for people: metrics as JSON lines (and TensorBoard when installed), recipe and versions."""

from __future__ import annotations

import importlib.metadata
import io
import json
import os
import platform
import time
from pathlib import Path

import torch
from ruamel.yaml import YAML

from components.atomic_files import atomic_path, write_json_atomic
from schemas import Recipe

PACKAGES = ("recipe", "torch", "transformers", "accelerate", "peft", "safetensors", "tokenizers", "diffusers")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_run_info(out_dir: Path, recipe: Recipe, resumed_at: int | None = None) -> None:
    """The resolved recipe and library versions, so a result can be reproduced later.

    A resumed run whose recipe differs keeps the earlier one as `resolved_recipe.until-step-N.yaml`: the steps
    before N were trained with it. A second resume from the same N (the first one stopped before it saved) keeps
    that file: the recipe of the attempt in between trained no step that was kept."""
    out_dir.mkdir(parents=True, exist_ok=True)
    yaml = YAML()
    yaml.default_flow_style = False
    buffer = io.StringIO()
    yaml.dump(json.loads(recipe.model_dump_json()), buffer)
    target = out_dir / "resolved_recipe.yaml"
    until = out_dir / f"resolved_recipe.until-step-{resumed_at or 0:08d}.yaml"
    changed = resumed_at is not None and target.is_file() and target.read_text(encoding="utf-8") != buffer.getvalue()
    if changed and not until.exists():
        os.replace(target, until)
    with atomic_path(target) as tmp:
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
    write_json_atomic(out_dir / "versions.json", library_versions())


def _logged_before(record: object, step: int, stage: str | None) -> bool:
    """Whether a row was logged before the checkpoint of `step` in `stage`: at that step, only the rows of that
    stage were (the next stage's opening evaluation comes after the checkpoint that ends a stage)."""
    if not isinstance(record, dict) or not isinstance(record.get("step"), int):
        return False
    return record["step"] < step or (record["step"] == step and record.get("stage", stage) == stage)


def _drop_rows_after(file: Path, step: int, stage: str | None) -> float:
    """Rows logged after the checkpoint a run resumes from describe steps that are trained again: drop them, so
    each step appears once (a torn last line from a killed process goes too). Returns the `time` of the last row
    kept, from which the resumed run's times go on."""
    kept, last_time = [], 0.0
    for line in file.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if _logged_before(record, step, stage):
            kept.append(line)
            if isinstance(record.get("time"), (int, float)):
                last_time = float(record["time"])
    with atomic_path(file) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
    return last_time


class MetricsLog:
    """Appends one JSON object per line (`time`: seconds since the run began, resumes included); only the main
    process writes. `resume_step`, `resume_stage`: the step and the stage's name of the checkpoint
    a run continues from; what was logged after it is dropped (here and in TensorBoard), but only at the first
    write, once the resume has been accepted: a resume refused on loading the checkpoint drops nothing."""

    def __init__(
        self, out_dir: Path, enabled: bool, resume_step: int | None = None, resume_stage: str | None = None
    ) -> None:
        self.enabled = enabled
        self.out_dir = out_dir
        self.file = out_dir / "metrics.jsonl"
        self.started = time.time()
        self.resume_step, self.resume_stage = resume_step, resume_stage
        self.tensorboard = None
        self.opened = False

    def _open(self) -> None:
        self.opened = True
        if self.resume_step is not None and self.file.is_file():
            self.started -= _drop_rows_after(
                self.file, self.resume_step, self.resume_stage
            )  # `time` runs on across resumes
        try:
            from torch.utils.tensorboard import SummaryWriter

            purge = None if self.resume_step is None else self.resume_step + 1
            self.tensorboard = SummaryWriter(str(self.out_dir / "tensorboard"), purge_step=purge)
        except ImportError:
            self.tensorboard = None

    def write(self, step: int, values: dict[str, float | int | str]) -> None:
        if not self.enabled:
            return
        if not self.opened:
            self._open()
        record = {"step": step, "time": round(time.time() - self.started, 3), **values}
        with self.file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def metrics_line(step: int, values: dict[str, float | int | str], of: str = "") -> str:
    """A metrics row as one line of a log file (a run under nohup or a scheduler has no progress bar):
    `step 120 (distill 120/3000): loss 0.1234, tokens_per_s 5120, lr/student 0.0001`. `of` follows the stage.
    The headline figures only (names with at most one `/`); each loss term's stays in metrics.jsonl."""
    numbers = ", ".join(
        f"{key} {value:.4g}" for key, value in values.items() if isinstance(value, (int, float)) and key.count("/") < 2
    )
    return f"step {step} ({values.get('stage', '')}{f' {of}' if of else ''}): {numbers}"


class LossWindow:
    """Mean loss and real tokens/s since the last metrics line, over every process. The loss adds up on the
    device, so a step never waits for it; `take` (every process, at logging steps only) reads it in one sync and
    starts the next window."""

    def __init__(self, accelerator, carried: list[float] | None = None) -> None:
        """`carried`: what `carry` gave before the checkpoint this run resumed from (held by the main process, as
        `take` adds every process's share)."""
        self.accelerator = accelerator
        self.loss_sum = torch.zeros((), device=accelerator.device)
        self.micro_steps, self.tokens, self.started = 0, 0, time.perf_counter()
        if carried and accelerator.is_main_process:
            self.loss_sum += carried[0]
            self.micro_steps = int(carried[1])

    def carry(self) -> list[float] | None:
        """The window's loss sum and micro-steps over every process, for a checkpoint (every process calls it);
        None when the window is empty. Tokens/s starts afresh after a resume, as its clock does."""
        totals = torch.stack(
            [self.loss_sum.float(), torch.tensor(float(self.micro_steps), device=self.loss_sum.device)]
        )
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals, "sum")
        loss_sum, micro_steps = totals.tolist()
        return [loss_sum, micro_steps] if micro_steps else None

    def add(self, loss: torch.Tensor, tokens: int) -> None:
        self.loss_sum += loss.detach()
        self.micro_steps += 1
        self.tokens += tokens

    def take(self) -> dict[str, float]:
        elapsed = time.perf_counter() - self.started
        counts = torch.tensor([self.micro_steps, self.tokens], dtype=torch.float32, device=self.loss_sum.device)
        totals = torch.cat([self.loss_sum.float().reshape(1), counts])
        if self.accelerator.num_processes > 1:
            totals = self.accelerator.reduce(totals, "sum")
        loss_sum, micro_steps, tokens = totals.tolist()
        self.loss_sum.zero_()
        self.micro_steps, self.tokens, self.started = 0, 0, time.perf_counter()
        return {"loss": loss_sum / max(1.0, micro_steps), "tokens_per_s": tokens / max(elapsed, 1e-9)}

"""Where a run writes, and how often."""

from __future__ import annotations

from pydantic import Field

from schemas.base import LocalPath, StrictModel


class Output(StrictModel):
    """Run directory and checkpoint/eval cadence."""

    dir: LocalPath = Field(description="Run directory (checkpoints, metrics, export), relative to the recipe.")
    save_every_steps: int = Field(default=1000, gt=0, description="Checkpoint cadence in optimizer steps.")
    save_every_minutes: float | None = Field(
        default=60,
        gt=0,
        description="Also checkpoint once this many minutes have passed since the last checkpoint (checked after "
        "every step; with several processes at each logging step), so slow steps never put hours of work at risk; "
        "null: by step count only.",
    )
    eval_every_steps: int = Field(default=500, gt=0, description="Evaluation cadence in optimizer steps.")
    log_every_steps: int = Field(default=10, gt=0, description="Metrics-line cadence in optimizer steps.")
    keep_last: int = Field(default=2, gt=0, description="Step checkpoints kept; older ones are deleted.")
    keep_best: bool = Field(default=True, description="Also keep the checkpoint with the best eval loss.")
    export: bool = Field(default=True, description="Write the distilled encoder to `<dir>/export` at the end.")

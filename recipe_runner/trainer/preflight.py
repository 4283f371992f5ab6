"""What `recipe run` checks from the plan (meta device, seconds) before minutes of loading weights and hours
of training: a model not downloaded yet, loader workers that could not pass batches back, a stage that would fail
as it starts, and a disk too small for the checkpoints the run keeps."""

from __future__ import annotations

from pathlib import Path

from components.models.downloads import needed_from, require_downloaded
from recipe_runner.plan import build_plan
from recipe_runner.trainer.disk_need import check_disk_space
from recipe_runner.trainer.loader_workers import LoaderWorkersError, require_worker_sockets, shared_memory_shortfall
from recipe_runner.trainer.parts import RunSetupError
from schemas import Recipe


def check_before_loading(recipe: Recipe, out_dir: Path, writes: bool) -> None:
    """`writes`: this process writes the checkpoints (the main one)."""
    require_downloaded([*needed_from("teacher", recipe.teacher), *needed_from("student", recipe.student)], "the run")
    require_worker_sockets(recipe.hardware.num_workers)
    plan = build_plan(recipe)
    shortfall = shared_memory_shortfall(recipe, plan.teacher.width, batches=1)
    if shortfall is not None:
        raise LoaderWorkersError(shortfall)
    if plan.stage_failures:
        raise RunSetupError("; ".join(plan.stage_failures) + ": the stage would fail as it starts; fix the recipe")
    if writes:
        check_disk_space(out_dir, plan.disk)

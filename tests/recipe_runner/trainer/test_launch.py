"""The launched process count against `hardware.distributed`, and the line a run starts with."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from recipe_runner.loader import load_recipe
from recipe_runner.trainer.launch import build_accelerator, check_launch, launch_in_words
from recipe_runner.trainer.parts import RunSetupError


def _processes(count: int) -> SimpleNamespace:
    return SimpleNamespace(num_processes=count, device=torch.device("cpu"))


def test_several_processes_need_ddp_in_the_recipe(tiny_recipe_path, tiny_overrides):
    alone = load_recipe(tiny_recipe_path, tiny_overrides).recipe
    with pytest.raises(RunSetupError, match=r"launched as 2 processes: add --set hardware.distributed=ddp"):
        check_launch(alone, _processes(2))
    check_launch(alone, _processes(1))
    check_launch(load_recipe(tiny_recipe_path, [*tiny_overrides, "hardware.distributed=ddp"]).recipe, _processes(2))


def test_the_first_line_says_what_an_optimizer_step_holds(tiny_recipe_path, tiny_overrides):
    recipe = load_recipe(tiny_recipe_path, [*tiny_overrides, "hardware.grad_accum=3", "hardware.batch_size=5"]).recipe
    assert launch_in_words(recipe, _processes(2)) == (
        "training on 2 processes (cpu); an optimizer step takes 3 micro-batches of up to 5 prompts from each process"
    )
    assert launch_in_words(recipe, _processes(1)).endswith("3 micro-batches of up to 5 prompts")
    ddp = load_recipe(tiny_recipe_path, [*tiny_overrides, "hardware.distributed=ddp"]).recipe
    assert "start several with torchrun --nproc_per_node N" in launch_in_words(ddp, _processes(1))
    assert "torchrun" not in launch_in_words(ddp, _processes(2))


def test_ddp_keeps_gradients_inside_its_buckets(tiny_recipe_path, tiny_overrides):
    """One gradient copy less under DDP; the memory plan counts one copy only."""
    recipe = load_recipe(tiny_recipe_path, [*tiny_overrides, "hardware.distributed=ddp"]).recipe
    assert build_accelerator(recipe).ddp_handler.to_kwargs() == {"gradient_as_bucket_view": True}


def test_one_process_runs_recipes_of_other_precisions_one_after_another(tiny_recipe_path, tiny_overrides, tmp_path):
    """A notebook or a sweep: accelerate alone would refuse the second precision until the runtime restarts."""
    from recipe_runner.trainer.loop import Trainer

    overrides = [*tiny_overrides, "stages.0.epochs=null", "stages.0.steps=2", "output.eval_every_steps=1000"]
    for run_name, precision in (("fp32", "fp32"), ("bf16", "bf16"), ("again", "fp32")):
        sets = [*overrides, f"output.dir={tmp_path / run_name}", f"hardware.precision={precision}"]
        assert Trainer(load_recipe(tiny_recipe_path, sets).recipe, progress=False).run().global_step == 2
    assert build_accelerator(load_recipe(tiny_recipe_path, tiny_overrides).recipe).mixed_precision == "no"

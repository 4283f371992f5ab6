"""How many processes a run was launched as, checked against the recipe and said in words at the start."""

from __future__ import annotations

from recipe_runner.trainer.parts import RunSetupError
from schemas import Recipe


def check_launch(recipe: Recipe, accelerator) -> None:
    """A launcher (torchrun) decides the process count; the recipe has to say that it expects several, so that
    the recipe kept with the run tells how it was trained."""
    processes = accelerator.num_processes
    if recipe.hardware.distributed == "none" and processes > 1:
        raise RunSetupError(
            f"hardware.distributed is none, but this run was launched as {processes} processes: add "
            "--set hardware.distributed=ddp (or write it in the recipe), or launch one process"
        )


def launch_in_words(recipe: Recipe, accelerator) -> str:
    """Where the run trains and what one optimizer step holds: the effective batch depends on both."""
    hw, processes = recipe.hardware, accelerator.num_processes
    each = f"{hw.grad_accum} micro-batch{'es' if hw.grad_accum > 1 else ''} of up to {hw.batch_size} prompts"
    where = f"{processes} processes" if processes > 1 else "1 process"
    return f"training on {where} ({accelerator.device.type}); an optimizer step takes {each} from each"

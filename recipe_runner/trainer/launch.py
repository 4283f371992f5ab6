"""The accelerator a run trains with, the number of processes it was launched as (checked against the recipe),
and the line a run starts with."""

from __future__ import annotations

from components.devices import resolve_device
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
    each += " from each process" if processes > 1 else ""
    line = f"training on {where} ({accelerator.device.type}); an optimizer step takes {each}"
    if hw.distributed == "ddp" and processes == 1:
        line += " (hardware.distributed is ddp: start several with torchrun --nproc_per_node N -m recipe_runner.cli)"
    return line


def _forget_an_earlier_runs_state() -> None:
    """accelerate keeps the first Accelerator's precision and device for the life of the process and refuses any
    other ("restart your runtime"): a notebook or a sweep that trains a bf16 recipe after an fp32 one would stop.
    One process with no process group can start over; a launched group keeps its state (and accelerate's error)."""
    import torch.distributed as dist
    from accelerate.state import AcceleratorState

    if not (dist.is_available() and dist.is_initialized()):
        AcceleratorState._reset_state(reset_partial_state=True)


def build_accelerator(recipe: Recipe):
    """accelerate for the recipe's device and precision, seeded; DDP when a launcher started several processes."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs, set_seed

    _forget_an_earlier_runs_state()
    hw = recipe.hardware
    use_cpu = resolve_device(hw).type == "cpu"
    precision = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[hw.precision]
    # Under DDP the gradients live inside its all-reduce buckets instead of beside a copy of them: one gradient's
    # worth of memory less (4 bytes per trained fp32 parameter), which the memory plan does not count.
    # Hidden states taken before the student's last layer leave the layers after it (and the final norm) without
    # a gradient, which DDP must be told of, or it stops at the second step waiting for their reduction.
    unused = getattr(recipe.student, "layer", -1) != -1
    ddp = DistributedDataParallelKwargs(gradient_as_bucket_view=True, find_unused_parameters=unused)
    accelerator = Accelerator(
        mixed_precision=precision, cpu=use_cpu, gradient_accumulation_steps=hw.grad_accum, kwargs_handlers=[ddp]
    )
    set_seed(hw.seed)
    return accelerator

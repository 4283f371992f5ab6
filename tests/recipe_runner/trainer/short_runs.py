"""Overrides that turn the tiny recipe into a short run of fixed steps, saving on a chosen cadence."""

from __future__ import annotations


def short_run(tiny_overrides: list[str], steps: int, save_every: int) -> list[str]:
    return [
        *tiny_overrides,
        "stages.0.epochs=null",
        f"stages.0.steps={steps}",
        f"output.save_every_steps={save_every}",
        "output.eval_every_steps=1000",
        "output.keep_last=10",
    ]


def constant_run(overrides: list[str], steps: int, *extra: str) -> list[str]:
    """`steps` steps at a constant learning rate, a checkpoint every 2 steps, a loss line every step, no eval."""
    return [
        *overrides,
        "stages.0.epochs=null",
        f"stages.0.steps={steps}",
        "stages.0.warmup_steps=0",
        "stages.0.schedule={type: constant}",
        "output.save_every_steps=2",
        "output.eval_every_steps=1000",
        "output.log_every_steps=1",
        "output.keep_last=10",
        *extra,
    ]

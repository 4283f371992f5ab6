"""Gradient checkpointing of the student, decided per batch.

Length-bucketed batches differ in size by an order of magnitude (image prompts: median 80 tokens, tail to 512),
and only the largest need recomputation to fit. Recomputing every batch cost 378 against 202 ms per step on an
H100 (`recipe bench`, README); with a token threshold the short majority keeps its activations and skips the
recompute, while the long batches that set the peak are still checkpointed.
"""

from __future__ import annotations

from torch import nn


class StudentCheckpointing:
    """`gradient_checkpointing` on the student's layers, switched on for batches of >= `min_tokens` padded tokens
    (every batch when `min_tokens` is None; none when checkpointing is off)."""

    def __init__(self, student: nn.Module, enabled: bool, min_tokens: int | None = None) -> None:
        self.min_tokens = min_tokens
        self.layers: list[nn.Module] = []
        if not enabled:
            return
        student.config.use_cache = False
        # transformers 5.x renamed the switch (the old name warns and goes in v6); older releases have only the old.
        if hasattr(student, "activation_checkpointing_enable"):
            student.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        elif hasattr(student, "gradient_checkpointing_enable"):
            student.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        without_input_grad_hook(student)
        # transformers keeps the switch as a per-layer attribute read at call time, so flipping it is free.
        self.layers = [m for m in student.modules() if getattr(m, "gradient_checkpointing", None) is True]

    def for_batch(self, padded_tokens: int) -> bool:
        """Set the layers for a batch of `padded_tokens` (batch x longest prompt); returns whether it recomputes,
        which a student in eval mode (frozen by its stage) never does: transformers checkpoints in training only."""
        on = bool(self.layers) and (self.min_tokens is None or padded_tokens >= self.min_tokens)
        for layer in self.layers:
            layer.gradient_checkpointing = on
        return on and self.layers[-1].training


def without_input_grad_hook(student: nn.Module) -> None:
    """Remove the hook that transformers (on enabling checkpointing) and peft (on wrapping a checkpointed model)
    put on the input embeddings to make their output require grad. Reentrant checkpointing needed it; ours is not
    reentrant. With it, a frozen student's forward is recorded and the backward runs through all its layers for
    no gradient (a stage that trains only the bolt-on: 92 against 60 ms a step in the tiny recipe's bench), and
    in evaluation the first compiled block sees an input that requires grad where the others do not: a graph more."""
    if hasattr(student, "disable_input_require_grads"):
        student.disable_input_require_grads()

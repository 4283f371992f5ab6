"""The parameters a student read at `student.layer` never uses: the layers after that hidden state and what
follows the stack (a final norm). They get no gradient, so they train nothing and cost no optimizer state;
counting them as trainable overstated a stage's parameters and memory."""

from __future__ import annotations

from torch import nn


def _layer_stack(model: nn.Module) -> tuple[str, nn.ModuleList] | None:
    """The stack of transformer layers: the longest ModuleList (Llama's and Qwen's `layers`, T5's `block`, GPT-2's
    `h`)."""
    stacks = [(name, module) for name, module in model.named_modules() if isinstance(module, nn.ModuleList)]
    return max(stacks, key=lambda found: len(found[1]), default=None)


def parameters_past(model: nn.Module, layer: int) -> set[str]:
    """Names of the parameters that hidden state `layer` (transformers' `hidden_states[layer]`: the output of the
    first `layer` layers, the embeddings at 0; -1 the last, after the final norm) does not depend on."""
    stack = _layer_stack(model) if layer != -1 else None
    if stack is None:
        return set()
    name, layers = stack
    used = layer if layer >= 0 else len(layers) + 1 + layer
    if used >= len(layers):  # the state after every layer: the last one
        return set()
    unused_layers = tuple(f"{name}.{index}." for index in range(used, len(layers)))
    past, after_stack = set(), False
    for parameter, _ in model.named_parameters():
        in_stack = parameter.startswith(f"{name}.")
        after_stack = after_stack or in_stack
        if parameter.startswith(unused_layers) or (after_stack and not in_stack):
            past.add(parameter)
    return past

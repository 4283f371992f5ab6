"""torch.compile for batches whose sequence length changes every step.

Only the repeated blocks are compiled (the student's decoder layers, the teacher's blocks), in place with
`nn.Module.compile`: every block of a class runs the same compiled code, so a 28-layer student compiles in the
time of one layer, and dynamic shapes keep a new sequence length from triggering a recompile. Embeddings and the
final norm stay eager: compiling them costs a graph and a cache entry for little fusion. A module may name its
own units instead (`compile_units()`): the bolt-on stack compiles each layer whole, since its layers are few
but wide, and their norms, activations and dropouts on 3-8k-wide activations fuse into the matrix products'
neighbours. Modules keep their identity, so state dicts, checkpoints and exports are unchanged.

All blocks of a class share one code object, and so one dynamo cache, with every variant a run makes of them:
training and evaluation (grad mode), a trainable or frozen input, LoRA-wrapped projections, the teacher's blocks
where it is compiled in the same process. torch keeps 8 variants of a code object and runs the rest eagerly with
one log line: a three-stage run with evaluation was seen to pass it, so its last stage lost compilation.
"""

from __future__ import annotations

import torch._dynamo
from torch import nn
from torch._dynamo.utils import counters

# Variants of one block's code a run may compile (about 3 a stage; a dozen stages of ours and a teacher fit).
RECOMPILE_LIMIT = 64


def repeated_blocks(module: nn.Module) -> list[nn.Module]:
    """Members of every layer stack: a ModuleList of composite modules (ones with children) of one class, or the
    units a module names with `compile_units()`. Their insides are not searched further, so a block's own list of
    norms is compiled as part of the block."""
    named_units = getattr(module, "compile_units", None)
    if callable(named_units):
        return list(named_units())
    one_class = isinstance(module, nn.ModuleList) and len({type(block) for block in module}) == 1
    if one_class and all(next(block.children(), None) is not None for block in module):
        return list(module)
    return [block for child in module.children() for block in repeated_blocks(child)]


def compile_wanted(setting: bool | str, device_type: str) -> bool:
    """hardware.compile resolved for a device: `auto` compiles on CUDA only."""
    return device_type == "cuda" if setting == "auto" else bool(setting)


def allow_run_variants() -> None:
    """Raise dynamo's per-code limit of compiled variants to what a run of several stages needs (see the module
    docstring); a higher limit set by the user is kept. It is torch's process-wide setting, as compiling is."""
    config = torch._dynamo.config
    config.recompile_limit = max(config.recompile_limit, RECOMPILE_LIMIT)


def compile_for_varied_lengths(module: nn.Module) -> nn.Module:
    """Compile the repeated blocks of `module` in place (dynamic shapes); returns `module` itself."""
    allow_run_variants()
    for block in repeated_blocks(module):
        block.compile(dynamic=True)
    return module


def compiled_graphs() -> int:
    """Graphs torch.compile has built in this process so far (dynamo's own counter)."""
    return int(counters["stats"]["unique_graphs"])

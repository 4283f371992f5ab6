"""LoRA adapter size without applying peft: the plan counts adapters on a meta model in microseconds."""

from __future__ import annotations

from torch import nn

from schemas.stages import LoRA


def lora_targets(model: nn.Module, lora: LoRA) -> list[str]:
    """Module names that receive adapters, matched as peft matches a list: the full name or a `.suffix`."""
    return [
        name
        for name, _ in model.named_modules()
        if any(name == target or name.endswith(f".{target}") for target in lora.target_modules)
    ]


def is_conv1d(module: nn.Module) -> bool:
    """transformers' Conv1D (GPT-2's projections): a Linear whose weight is stored transposed, (in, out)."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D)


def fans_in_first(model: nn.Module, lora: LoRA) -> bool:
    """Whether the adapted modules store their weight as (in, out), as GPT-2's Conv1D does: peft's fan_in_fan_out."""
    modules = dict(model.named_modules())
    return any(is_conv1d(modules[name]) for name in lora_targets(model, lora))


def lora_parameter_count(model: nn.Module, lora: LoRA, unused: frozenset[str] = frozenset()) -> int:
    """r * (in + out) per adapted Linear or Conv1D (A: r x in, B: out x r) and r * (rows + dim) per adapted
    Embedding; targets whose weight is among the parameter names `unused` get no gradient and are not counted."""
    modules = dict(model.named_modules())
    total, kinds = 0, set()
    for name in lora_targets(model, lora):
        module = modules[name]
        if f"{name}.weight" in unused:
            continue
        if isinstance(module, nn.Linear):
            total += lora.r * (module.in_features + module.out_features)
        elif is_conv1d(module):
            total += lora.r * sum(module.weight.shape)
        elif isinstance(module, nn.Embedding):
            total += lora.r * (module.num_embeddings + module.embedding_dim)
        else:
            raise ValueError(
                f"LoRA target {name!r} is a {type(module).__name__}; only Linear, Conv1D and Embedding are adapted"
            )
        kinds.add(type(module).__name__)
    if {"Linear", "Conv1D"} <= kinds:  # peft's fan_in_fan_out is one setting for every target
        raise ValueError(
            "LoRA targets mix Linear and Conv1D layers (weights stored the other way round): adapt one kind"
        )
    return total


def lora_target_problem(model: nn.Module, lora: LoRA) -> str | None:
    """Why peft could not adapt `lora.target_modules` of `model`, in words; None when it can."""
    names = [name for name, _ in model.named_modules()]
    unmatched = [t for t in lora.target_modules if not any(n == t or n.endswith(f".{t}") for n in names)]
    if unmatched:  # peft would quietly skip a misspelt target as long as another one matches
        adaptable = sorted(
            {
                name.rsplit(".", 1)[-1]
                for name, m in model.named_modules()
                if isinstance(m, (nn.Linear, nn.Embedding)) or is_conv1d(m)
            }
        )
        shorthand = " (peft's all-linear shorthand is not taken: name the layers)" if "all-linear" in unmatched else ""
        return (
            f"{', '.join(map(repr, unmatched))} match{'es' if len(unmatched) == 1 else ''} no module of "
            f"{type(model).__name__}; its adaptable layers are named {', '.join(adaptable) or '(none)'}{shorthand}"
        )
    try:
        lora_parameter_count(model, lora)
    except ValueError as exc:
        return str(exc)
    return _tied_target(model, lora)


def _tied_target(model: nn.Module, lora: LoRA) -> str | None:
    """A target whose weight is tied to another module's (input embeddings and LM head with tie_word_embeddings):
    merging its adapter writes the change into the one matrix both read, so the other layer changes too."""
    inputs = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    outputs = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if inputs is None or outputs is None or outputs.weight is not inputs.weight:
        return None
    modules = dict(model.named_modules())
    tied = [name for name in lora_targets(model, lora) if modules[name] in (inputs, outputs)]
    if not tied:
        return None
    return (
        f"{tied[0]} shares its weight with the {'LM head' if modules[tied[0]] is inputs else 'input embeddings'} "
        "(tie_word_embeddings): merging its adapter would change both layers; leave it out of target_modules"
    )

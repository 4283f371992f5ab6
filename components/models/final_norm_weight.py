"""The teacher's final-norm weight without loading the teacher.

A run whose teacher outputs are all cached needs one tensor of the teacher (a bolt-on RMSNorm starts from it):
reading it alone from the safetensors files takes milliseconds, where building T5-XXL took minutes and ~10 GB of
host memory on every run and resume.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from components.models.loading import Role, build_model, final_norm
from components.models.weight_files import safetensors_files
from schemas.models import ModelSource


def final_norm_weight(source: ModelSource, role: Role, seed: int = 0) -> torch.Tensor:
    """The weight the model's final norm loads with, in `source.dtype`: one tensor read from a local folder or a
    cached hub snapshot; an inline config (random weights from `seed`), or weights not in safetensors files, are
    built whole as a run without the cache builds them."""
    from components.cache.weights import model_dir

    directory = model_dir(source) if source.model is not None else None
    if directory is not None:
        meta = build_model(source, role, meta=True)
        norm = final_norm(meta)
        name = next(key for key, module in meta.named_modules() if module is norm) + ".weight"
        names = [name, f"{meta.base_model_prefix}.{name}"] if meta.base_model_prefix else [name]
        weight = _read_tensor(directory, names)
        if weight is not None:
            return weight.to(getattr(torch, source.dtype))
    model = build_model(source, role, seed=seed)
    return final_norm(model).weight.detach().clone()


def _read_tensor(directory: Path, names: list[str]) -> torch.Tensor | None:
    """The first of `names` found in the folder's safetensors files; None when there are none or none holds it
    (the caller then builds the model, whose loading names what is wrong)."""
    try:
        for file in safetensors_files(directory):
            with safe_open(str(file), framework="pt") as handle:
                held = set(handle.keys())
                found = next((key for key in names if key in held), None)
                if found is not None:
                    return handle.get_tensor(found)
    except (OSError, ValueError, KeyError, SafetensorError):  # no such files, or an unreadable index
        return None
    return None

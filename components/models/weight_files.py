"""Whether a local model folder holds whole weight files, read from their headers before minutes of loading.

An interrupted download or copy leaves a cut-off model.safetensors; transformers then fails inside its loader with
a raw SafetensorError, after `validate` and `plan` (which read only config.json) said the recipe was fine.
"""

from __future__ import annotations

import json
from pathlib import Path

from components.safetensors_header import DamagedFileError, read_header

SAFETENSORS, SAFETENSORS_INDEX = "model.safetensors", "model.safetensors.index.json"
PICKLED = ("pytorch_model.bin", "pytorch_model.bin.index.json")  # loaded by transformers; not looked into here


def safetensors_files(folder: Path) -> list[Path]:
    """The weight files the folder's index names (sharded checkpoints), or its single file."""
    index = folder / SAFETENSORS_INDEX
    if not index.is_file():
        return [folder / SAFETENSORS]
    weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
    return [folder / name for name in sorted(set(weight_map.values()))]


def weights_problem(folder: Path) -> str | None:
    """What keeps the weights in `folder` from loading (missing, cut short, unreadable), in words with what to
    do; None when they look whole."""
    again = "download or copy the model again"
    if not ((folder / SAFETENSORS).is_file() or (folder / SAFETENSORS_INDEX).is_file()):
        if any((folder / name).is_file() for name in PICKLED):
            return None
        return (
            f"{folder}: no weights here (no {SAFETENSORS}, {SAFETENSORS_INDEX} or {PICKLED[0]}); give the folder "
            "the model was saved to with save_pretrained, or an inline `config` for random weights"
        )
    try:
        files = safetensors_files(folder)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        return f"{folder / SAFETENSORS_INDEX}: unreadable shard index ({exc}); {again}"
    for file in files:
        if not file.is_file():
            return f"{file}: missing, though {SAFETENSORS_INDEX} names it; {again}"
        try:
            read_header(file)
        except DamagedFileError as exc:
            return f"{file}: {exc}; it is damaged (an interrupted download or copy?): {again}"
    return None

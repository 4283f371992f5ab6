"""What a run leaves for people: metrics as JSON lines (and TensorBoard when installed), recipe and versions."""

from __future__ import annotations

import importlib.metadata
import json
import platform
import time
from pathlib import Path

from ruamel.yaml import YAML

from schemas import Recipe

PACKAGES = ("recipe", "torch", "transformers", "accelerate", "peft", "safetensors", "tokenizers", "diffusers")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def write_run_info(out_dir: Path, recipe: Recipe) -> None:
    """The resolved recipe and library versions, so a result can be reproduced later."""
    out_dir.mkdir(parents=True, exist_ok=True)
    yaml = YAML()
    yaml.default_flow_style = False
    with (out_dir / "resolved_recipe.yaml").open("w", encoding="utf-8") as handle:
        yaml.dump(json.loads(recipe.model_dump_json()), handle)
    (out_dir / "versions.json").write_text(json.dumps(library_versions(), indent=2))


class MetricsLog:
    """Appends one JSON object per line; only the main process writes."""

    def __init__(self, out_dir: Path, enabled: bool) -> None:
        self.enabled = enabled
        self.file = out_dir / "metrics.jsonl"
        self.started = time.time()
        self.tensorboard = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(out_dir / "tensorboard"))
            except ImportError:
                self.tensorboard = None

    def write(self, step: int, values: dict[str, float | int | str]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time() - self.started, 3), **values}
        with self.file.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.tensorboard is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self.tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()

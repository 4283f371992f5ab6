"""Exports: the distilled encoder (embedding family: a directory that loads with one call and encodes prompts for
Chroma) and the distilled causal LM (logits family: a plain transformers model folder)."""

import json
from pathlib import Path

from torch import nn

from components.atomic_files import ForeignDirectoryError
from components.export.causal_lm import check_causal_lm_target, export_causal_lm
from components.export.distilled_encoder import (
    FORMAT_VERSION,
    DistilledEncoder,
    EncoderManifest,
    ExportError,
    build_manifest,
    check_export_target,
    export_encoder,
    read_manifest,
)


def check_target(out_dir: str | Path, family: str, recipe_name: str | None = None) -> None:
    """Refuse an export target holding anything but an earlier export of the recipe's family, before any work;
    with `recipe_name`, an export of another recipe too (a recipe that extends another inherits its output.dir)."""
    other, what = ("encoder.json", "an image encoder") if family == "logits" else ("distilled.json", "a causal LM")
    if (Path(out_dir) / other).is_file():
        ours = "a causal LM" if family == "logits" else "an image encoder"
        raise ForeignDirectoryError(
            f"{out_dir} holds the export of {what} ({other}), and this recipe exports {ours}: one kind is never "
            "written over the other; choose another --out"
        )
    (check_causal_lm_target if family == "logits" else check_export_target)(out_dir)
    made_by = exported_by(Path(out_dir))
    if recipe_name is not None and made_by not in (None, recipe_name):
        raise ForeignDirectoryError(
            f"{out_dir} holds the export of recipe {made_by!r}, not of {recipe_name!r}, which replacing it would "
            "lose: choose another --out (or give this recipe an output.dir of its own)"
        )


def _manifest_value(out_dir: Path, key: str) -> str | None:
    """A text value of an export's manifest (either kind); None where there is no readable one or no such value."""
    for manifest in ("encoder.json", "distilled.json"):
        try:
            value = json.loads((out_dir / manifest).read_text(encoding="utf-8")).get(key)
        except (OSError, ValueError, AttributeError):
            continue
        return value if isinstance(value, str) else None
    return None


def exported_by(out_dir: Path) -> str | None:
    """The recipe named in an export's manifest; None where there is no readable one."""
    return _manifest_value(out_dir, "recipe")


def exported_from(out_dir: Path) -> str | None:
    """The checkpoint `recipe export` wrote an export from; None for a run's own export (or none at all)."""
    return _manifest_value(out_dir, "checkpoint")


def export_trained(out_dir: str | Path, recipe, model: nn.Module, tokenizer, checkpoint: str | None = None) -> Path:
    """The export of the recipe's family from the trained model (a DistillModel or LogitsModel); `checkpoint`:
    the one `recipe export` loaded it from (None: a run's final weights)."""
    if recipe.family == "logits":
        return export_causal_lm(out_dir, recipe, model.student, tokenizer, checkpoint)
    return export_encoder(out_dir, recipe, model.student, model.bolt_on, tokenizer, checkpoint)


__all__ = [
    "FORMAT_VERSION",
    "DistilledEncoder",
    "EncoderManifest",
    "ExportError",
    "build_manifest",
    "check_export_target",
    "check_target",
    "export_encoder",
    "export_trained",
    "exported_by",
    "exported_from",
    "read_manifest",
]

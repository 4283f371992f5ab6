"""Exports: the distilled encoder (embedding family: a directory that loads with one call and encodes prompts for
Chroma) and the distilled causal LM (logits family: a plain transformers model folder)."""

from pathlib import Path

from torch import nn

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


def check_target(out_dir: str | Path, family: str) -> None:
    """Refuse an export target holding anything but an earlier export of the recipe's family, before any work."""
    (check_causal_lm_target if family == "logits" else check_export_target)(out_dir)


def export_trained(out_dir: str | Path, recipe, model: nn.Module, tokenizer) -> Path:
    """The export of the recipe's family from the trained model (a DistillModel or LogitsModel)."""
    if recipe.family == "logits":
        return export_causal_lm(out_dir, recipe, model.student, tokenizer)
    return export_encoder(out_dir, recipe, model.student, model.bolt_on, tokenizer)


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
    "read_manifest",
]

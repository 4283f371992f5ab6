"""The exported student of the logits family: a plain transformers model folder, loadable with
`AutoModelForCausalLM.from_pretrained(dir)` anywhere, plus `distilled.json` saying which recipe made it."""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field
from torch import nn

from components.atomic_files import atomic_directory, recover_directory
from components.export.written_files import check_target, files_in, replace_rules
from schemas import Recipe
from schemas.base import StrictModel
from schemas.models import Teacher

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "distilled.json"
_REPLACES = replace_rules(MANIFEST)


class CausalLMManifest(StrictModel):
    """distilled.json: where the model folder came from; transformers ignores it."""

    format_version: int = Field(description="Layout version of the export directory.")
    recipe: str = Field(description="Name of the recipe that produced the export.")
    family: str = Field(description="Distillation family of the recipe (logits).")
    teacher: Teacher = Field(description="The teacher it was distilled from, as the recipe gave it.")
    bidirectional: bool = Field(
        default=False,
        description="Trained to attend both ways (denoising): use it as an encoder with padding-only masks.",
    )
    checkpoint: str | None = Field(
        default=None,
        description="The checkpoint `recipe export` wrote it from; None: the weights a `recipe run` ended with "
        "(a run replaces only such an export, never one a person chose).",
    )
    files: list[str] = Field(
        description="Every file the export wrote, relative to it: a later export replaces only these."
    )


def check_causal_lm_target(out_dir: str | Path) -> None:
    """Refuse, before any work, an `out_dir` that holds anything but an earlier export of this kind."""
    check_target(out_dir, _REPLACES)


def export_causal_lm(
    out_dir: str | Path, recipe: Recipe, student: nn.Module, tokenizer, checkpoint: str | None = None
) -> Path:
    """Written under a temporary name and renamed into place: `out_dir` is never half-written, and an earlier
    export stays until the new one is complete."""
    from components.export.distilled_encoder import unmerged
    from components.models.loading import quiet_transformers_bars

    out_dir = Path(out_dir).resolve()
    check_causal_lm_target(out_dir)
    with atomic_directory(out_dir, **_REPLACES) as tmp, quiet_transformers_bars():
        model = unmerged(student)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        manifest = CausalLMManifest(
            format_version=FORMAT_VERSION,
            recipe=recipe.recipe,
            family=recipe.family,
            teacher=recipe.teacher,
            bidirectional=getattr(recipe.student, "bidirectional", False),
            checkpoint=checkpoint,
            files=files_in(tmp),
        )
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    log.info("exported distilled causal LM to %s", out_dir)
    return out_dir


def read_causal_lm_manifest(directory: str | Path) -> CausalLMManifest | None:
    """The export's distilled.json, or None where there is none (or it is unreadable). An export hidden by a
    crash between the two renames that replace it is put back first."""
    recover_directory(Path(directory), MANIFEST)
    try:
        return CausalLMManifest.model_validate_json((Path(directory) / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None

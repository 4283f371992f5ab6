"""The exported distilled encoder: one directory (student, tokenizer, bolt-on, encoder.json) loaded with one call.

Layout of an export directory::

    encoder.json           EncoderManifest: bolt-on spec, widths, max_length, student layer, inference defaults
    student/               student.save_pretrained (safetensors) and its tokenizer
    bolt_on.safetensors    bolt-on weights
"""

from __future__ import annotations

import copy
import logging
from functools import cache
from pathlib import Path

import torch
from pydantic import Field, ValidationError
from safetensors.torch import load_model, save_model
from torch import nn

from components.atomic_files import atomic_directory, recover_directory
from components.attention_backends import shape_stable_attention
from components.data.prompts import check_prompts
from components.errors import UserFacingError
from components.export.written_files import CHECKPOINT_MARKER, check_target, files_in, replace_rules
from components.inference.t5_encoding import warn_cut
from components.registry import recipe_class
from schemas import Recipe
from schemas.base import StrictModel
from schemas.bolt_on import BoltOn
from schemas.extended import with_fields
from schemas.inference import Inference
from schemas.models import HiddenStatesStudent, Teacher

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "encoder.json"
STUDENT_DIR = "student"
BOLT_ON_FILE = "bolt_on.safetensors"


# What an export replaces: only an earlier export, recognised by its manifest (written last).
_REPLACES = replace_rules(MANIFEST, legacy_names=(STUDENT_DIR, BOLT_ON_FILE))
_DTYPE_NAMES = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class ExportError(UserFacingError):
    """An export directory is missing, incomplete or written by an incompatible version."""


class EncoderManifest(StrictModel):
    """encoder.json: everything needed to rebuild the encoder, and to render without the recipe."""

    format_version: int = Field(description="Layout version of the export directory.")
    recipe: str = Field(description="Name of the recipe that produced the export.")
    student_width: int = Field(gt=0, description="Hidden width of the student (bolt-on input).")
    output_width: int = Field(gt=0, description="Width of the produced embeddings (teacher width).")
    max_length: int = Field(gt=0, description="Tokens kept per prompt.")
    student_layer: int = Field(description="Student hidden-state index fed to the bolt-on; -1 is the last layer.")
    bolt_on: BoltOn = Field(description="Bolt-on layer stack.")
    inference: Inference | None = Field(default=None, description="Rendering defaults of the recipe.")
    teacher: Teacher | None = Field(default=None, description="Teacher source, for rendering with the T5 path.")
    teacher_seed: int | None = Field(
        default=None,
        description="Seed the teacher's random weights were drawn from, for an inline-config teacher (None: "
        "written before it was recorded, or a teacher with weights of its own).",
    )
    checkpoint: str | None = Field(
        default=None,
        description="The checkpoint `recipe export` wrote it from; None: the weights a `recipe run` ended with "
        "(a run replaces only such an export, never one a person chose).",
    )
    files: list[str] | None = Field(
        default=None,
        description="Every file the export wrote, relative to it: a later export replaces only these, so files "
        "a person added are never deleted with it.",
    )


def manifest_class() -> type[EncoderManifest]:
    """The manifest as this machine reads it: with the bolt-on layer types of installed packages."""
    return _manifest_with(recipe_class().model_fields["bolt_on"].annotation)


@cache
def _manifest_with(bolt_on: type[BoltOn]) -> type[EncoderManifest]:
    return EncoderManifest if bolt_on is BoltOn else with_fields(EncoderManifest, bolt_on=bolt_on)  # type: ignore[return-value]


def unmerged(student: nn.Module) -> nn.Module:
    """A peft model is saved with its adapters merged, on a copy so the training model keeps its adapters."""
    if hasattr(student, "merge_and_unload"):
        return copy.deepcopy(student).merge_and_unload()
    return student


@torch.no_grad()
def _output_width(bolt_on: nn.Module, student_width: int) -> int:
    """Measured with one dummy token: the bolt-on module is the authority on its own output width."""
    param = next(bolt_on.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (torch.device("cpu"), torch.float32)
    was_training = bolt_on.training
    bolt_on.eval()
    try:
        hidden = torch.zeros(1, 1, student_width, device=device, dtype=dtype)
        out = bolt_on(hidden, torch.ones(1, 1, dtype=torch.bool, device=device))
    finally:
        bolt_on.train(was_training)
    return int(out.shape[-1])


def build_manifest(recipe: Recipe, student_width: int, output_width: int) -> EncoderManifest:
    """The manifest an export of `recipe` carries; also used for an in-memory DistilledEncoder."""
    return manifest_class()(
        format_version=FORMAT_VERSION,
        recipe=recipe.recipe,
        student_width=student_width,
        output_width=output_width,
        max_length=recipe.student.max_length,
        student_layer=recipe.student.layer,
        bolt_on=recipe.bolt_on,
        inference=recipe.inference,
        teacher=recipe.teacher,
        teacher_seed=recipe.hardware.seed if recipe.teacher.config is not None else None,
    )


def check_export_target(out_dir: str | Path) -> None:
    """Refuse, before any work, an `out_dir` that holds anything but an earlier export (the export replaces it)."""
    check_target(out_dir, _REPLACES)


def export_encoder(
    out_dir: str | Path,
    recipe: Recipe,
    student: nn.Module,
    bolt_on: nn.Module,
    tokenizer,
    checkpoint: str | None = None,
) -> Path:
    """Write the export to a temporary sibling and rename it into place, so `out_dir` is never half-written;
    an existing export stays in place until the new one is complete. Anything else at `out_dir` is refused."""
    from components.models.loading import hidden_width, quiet_transformers_bars

    out_dir = Path(out_dir).resolve()
    check_export_target(out_dir)
    student_width = hidden_width(student.config)
    manifest = build_manifest(recipe, student_width, _output_width(bolt_on, student_width))
    with atomic_directory(out_dir, **_REPLACES) as tmp, quiet_transformers_bars():
        unmerged(student).save_pretrained(tmp / STUDENT_DIR)
        tokenizer.save_pretrained(tmp / STUDENT_DIR)
        save_model(bolt_on, str(tmp / BOLT_ON_FILE))
        manifest = manifest.model_copy(update={"files": files_in(tmp), "checkpoint": checkpoint})
        (tmp / MANIFEST).write_text(manifest.model_dump_json(indent=2) + "\n")
    log.info("exported distilled encoder to %s", out_dir)
    return out_dir


def read_manifest(directory: str | Path) -> EncoderManifest:
    """encoder.json validated back into its pydantic spec; a clear ExportError when it is missing or wrong."""
    from components.export.load_checks import REEXPORT, validation_in_words

    directory = Path(directory)
    recover_directory(directory, MANIFEST)
    file = directory / MANIFEST
    if not file.is_file() and (directory / CHECKPOINT_MARKER).is_file():
        raise ExportError(
            f"{directory} is a training checkpoint, not an exported encoder: export it with "
            f"`recipe export RECIPE --checkpoint {directory} --out DIR`, then pass --checkpoint DIR"
        )
    if not file.is_file():
        raise ExportError(
            f"no exported encoder at {directory}: run `recipe run RECIPE` (or `recipe export RECIPE`) first"
        )
    try:
        manifest = manifest_class().model_validate_json(file.read_bytes())
    except ValidationError as exc:
        raise ExportError(f"{file}: not a valid encoder manifest ({validation_in_words(exc)}); {REEXPORT}") from None
    except OSError as exc:
        raise ExportError(f"{file}: cannot be read ({exc.strerror or exc}); {REEXPORT}") from None
    if manifest.format_version != FORMAT_VERSION:
        raise ExportError(
            f"{file}: export format version {manifest.format_version}, this recipe version reads {FORMAT_VERSION}; "
            + REEXPORT
        )
    return manifest


def _check_student_fits(directory: Path, manifest: EncoderManifest, student: nn.Module, tokenizer) -> None:
    """What the files agree on when written by an export, and would otherwise fail at the first prompt."""
    from components.export.load_checks import REEXPORT

    config = student.config
    layers = getattr(config, "num_hidden_layers", None) or getattr(
        getattr(config, "text_config", None), "num_hidden_layers", None
    )
    if layers is not None and not -(layers + 1) <= manifest.student_layer <= layers:
        raise ExportError(
            f"{directory / MANIFEST}: student_layer {manifest.student_layer} is not a hidden state of the student, "
            f"which has {layers} layers (states -{layers + 1}..{layers}); {REEXPORT}"
        )
    if tokenizer.pad_token_id is None:  # training pads with any id (masked); batching here needs a named token
        stand_in = tokenizer.eos_token or tokenizer.unk_token
        if stand_in is None:
            raise ExportError(
                f"{directory / STUDENT_DIR}: its tokenizer has no padding, end or unknown token to pad prompts with "
                f"(tokenizer_config.json edited or damaged?); {REEXPORT}"
            )
        tokenizer.pad_token = stand_in  # the positions it fills are masked out


class DistilledEncoder:
    """Student + bolt-on + tokenizer: prompts in, teacher-width embeddings and a boolean mask out."""

    def __init__(self, student: nn.Module, bolt_on: nn.Module, tokenizer, manifest: EncoderManifest) -> None:
        self.student = student.eval()
        self.bolt_on = bolt_on.eval()
        self.tokenizer = tokenizer
        self.manifest = manifest

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
        """Rebuild the encoder from an export directory written by `export_encoder`.

        Every weight file's header and size are checked first, so a damaged export is one line naming the file.
        """
        from safetensors import SafetensorError

        from components.bolt_on.stack import build_bolt_on
        from components.export.load_checks import REEXPORT, damaged, first_damaged_weights
        from components.models.loading import build_model, quiet_transformers_bars
        from components.models.tokenizer import load_tokenizer

        directory = Path(directory)
        manifest = read_manifest(directory)
        if dtype not in _DTYPE_NAMES:
            raise ExportError(f"dtype {dtype}: use one of {', '.join(_DTYPE_NAMES.values())}")
        for part in (STUDENT_DIR, BOLT_ON_FILE):
            if not (directory / part).exists():
                raise ExportError(f"export at {directory} is incomplete: {part} is missing; {REEXPORT}")
        damage = first_damaged_weights(
            [directory / BOLT_ON_FILE, *sorted((directory / STUDENT_DIR).glob("*.safetensors"))]
        )
        if damage is not None:
            raise ExportError(damage)
        source = HiddenStatesStudent(
            type="hidden_states",
            model=str(directory / STUDENT_DIR),
            dtype=_DTYPE_NAMES[dtype],
            max_length=manifest.max_length,
            layer=manifest.student_layer,
        )
        try:
            tokenizer = load_tokenizer(source)
            with quiet_transformers_bars():  # a local export loads in a moment: no "Loading weights" bar
                student = build_model(source, "student", device=str(device)).to(device=device, dtype=dtype)
        except UserFacingError as exc:  # a damaged config.json, tokenizer or weights of the student
            raise ExportError(f"{str(exc).rstrip('.')}; {REEXPORT}") from None
        except SafetensorError as exc:
            raise ExportError(damaged(directory / STUDENT_DIR, str(exc))) from None
        _check_student_fits(directory, manifest, student, tokenizer)
        bolt_on = build_bolt_on(manifest.bolt_on, manifest.student_width, manifest.output_width)
        try:
            missing, unexpected = load_model(bolt_on, str(directory / BOLT_ON_FILE), strict=False)
        except (SafetensorError, RuntimeError) as exc:  # RuntimeError: a tensor of another shape than the spec's
            raise ExportError(damaged(directory / BOLT_ON_FILE, " ".join(str(exc).split()))) from None
        if missing or unexpected:
            raise ExportError(
                f"{directory / BOLT_ON_FILE} does not match the bolt-on spec in {MANIFEST}: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}; {REEXPORT}"
            )
        return cls(student, bolt_on.to(device=device, dtype=dtype), tokenizer, manifest)

    @property
    def device(self) -> torch.device:
        return next(self.student.parameters()).device

    @torch.inference_mode()
    @shape_stable_attention()
    def encode(
        self, prompts: list[str], max_length: int | None = None, *, allow_empty: bool = False, what: str = "prompt"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings [B, L, D] (float32) and mask [B, L] (bool, True = real token).

        `allow_empty` is for negative prompts: an empty one that tokenizes to nothing becomes a single
        masked-out position (no conditioning) instead of an error. A prompt longer than `max_length` is read
        up to it, with a PromptCut warning naming it as `what`.
        """
        check_prompts(prompts, allow_empty=allow_empty)
        field = "the max_length asked" if max_length else "the student.max_length the encoder was exported with"
        max_length = max_length or self.manifest.max_length
        warn_cut(self.tokenizer, prompts, max_length, what, field)
        # Right padding keeps real tokens at positions 0..n-1 whatever the batch, as in an unpadded forward.
        batch = self.tokenizer(
            prompts, padding=True, padding_side="right", truncation=True, max_length=max_length, return_tensors="pt"
        )
        ids = batch["input_ids"].to(self.device)
        mask = batch["attention_mask"].to(self.device).bool()
        if ids.shape[1] == 0:
            width = self.manifest.output_width
            return torch.zeros(len(prompts), 1, width, device=self.device), torch.zeros(
                len(prompts), 1, dtype=torch.bool, device=self.device
            )
        layer = self.manifest.student_layer
        out = self.student(input_ids=ids, attention_mask=mask.long(), output_hidden_states=layer != -1)
        hidden = out.last_hidden_state if layer == -1 else out.hidden_states[layer]
        bolt_dtype = next(self.bolt_on.parameters(), hidden).dtype
        embeds = self.bolt_on(hidden.to(bolt_dtype), mask).float()
        # Zeros at padding: whatever sits there must never reach a consumer that forgets the mask (or NaN).
        return embeds.masked_fill(~mask.unsqueeze(-1), 0.0), mask

"""Base class shared by every recipe model: unknown keys are errors, never ignored."""

from __future__ import annotations

import math
import types
import typing
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator


def _admits(annotation: Any, kind: type) -> bool:
    """Whether a field's type takes values of `kind` (through Annotated and unions)."""
    if annotation is Any:
        return True
    if annotation is None:
        annotation = type(None)
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _admits(typing.get_args(annotation)[0], kind)
    if origin in (typing.Union, types.UnionType):
        return any(_admits(arg, kind) for arg in typing.get_args(annotation))
    return annotation is kind


class _YesNo:
    """A true or false that stands where a number belongs: no number type accepts it, and it reads as written."""

    def __init__(self, value: bool) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "true" if self.value else "false"


def _a_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


class QuotedText:
    """A quoted number (`batch_size: '8'`) where a number belongs: pydantic would read it as 8, an editor using the
    JSON schema flags it; it fails as what it is, so both say the same."""

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


class StrictModel(BaseModel):
    """A recipe section; a typo in a key must fail loudly instead of silently using a default."""

    # A NaN or inf in a recipe is a typo or an overflow (1e400), never a setting; YAML would print it back as null.
    model_config = ConfigDict(extra="forbid", validate_assignment=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _as_written(cls, value: Any) -> Any:
        """`key: null` removes an inherited value: where null is not a value of the field, the default applies.
        And pydantic would read `grad_accum: true` as 1 and `batch_size: '8'` as 8: a yes/no or a quoted text
        where a number belongs fails as what it is."""
        if not isinstance(value, dict):
            return value
        out = {}
        for name, item in value.items():
            field = cls.model_fields.get(name)
            kind = None if field is None else field.annotation
            if item is None and field is not None and not field.is_required() and not _admits(kind, type(None)):
                continue
            number = _admits(kind, int) or _admits(kind, float)
            if isinstance(item, bool) and number and not _admits(kind, bool):
                item = _YesNo(item)
            elif isinstance(item, str) and number and not _admits(kind, str) and _a_number(item):
                item = QuotedText(item)
            out[name] = item
        return out


class PathMarker:
    """Marks a field whose value is a file-system path, resolved relative to the YAML file that set it."""

    def __init__(self, must_be_local: bool) -> None:
        self.must_be_local = must_be_local

    def __repr__(self) -> str:
        return f"PathMarker(must_be_local={self.must_be_local})"


LocalPath = Annotated[str, PathMarker(must_be_local=True)]
"""A path on disk (data file, cache or output directory)."""

HubOrPath = Annotated[str, PathMarker(must_be_local=False)]
"""A Hugging Face hub id (``org/name``) or a local directory; local when it exists next to the recipe."""

PositiveInt = Annotated[int, Field(gt=0)]
# Bounds far past any real value, so that a typo's 10**20 is a problem at its line, not an OverflowError deep in
# a tokenizer or accelerate after the models loaded.
MAX_TOKENS = 1 << 24
MAX_COUNT = 1 << 20
NonNegativeFloat = Annotated[float, Field(ge=0)]


class ValueErrorAt(ValueError):
    """A problem inside a free mapping, at `path` below the field (so the error can point at that very line)."""

    def __init__(self, path: tuple[str | int, ...], message: str) -> None:
        super().__init__(message)
        self.path = path


def _finite_throughout(values: dict[str, Any]) -> dict[str, Any]:
    """A free mapping (an inline architecture config) is not checked field by field: a NaN or inf in it would
    reach the model and show up as a diverged run or a black image, blamed on the learning rate."""

    def walk(node: Any, path: tuple[str | int, ...]) -> None:
        if isinstance(node, float) and not math.isfinite(node):
            raise ValueErrorAt(path, f"{node} is not a finite number; a config value must be one")
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, item in items:
            walk(item, (*path, key))

    walk(values, ())
    return values


FreeMapping = Annotated[dict[str, Any], AfterValidator(_finite_throughout)]
"""Settings passed through to a library as they are (transformers and diffusers configs), numbers kept finite."""

"""Base class shared by every recipe model: unknown keys are errors, never ignored."""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


def _accepts_none(annotation: Any) -> bool:
    if annotation is None or annotation is type(None) or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _accepts_none(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return any(_accepts_none(arg) for arg in typing.get_args(annotation))
    return False


class StrictModel(BaseModel):
    """A recipe section; a typo in a key must fail loudly instead of silently using a default."""

    # A NaN or inf in a recipe is a typo or an overflow (1e400), never a setting; YAML would print it back as null.
    model_config = ConfigDict(extra="forbid", validate_assignment=False, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _null_restores_the_default(cls, value: Any) -> Any:
        """`key: null` removes an inherited value: where null is not a value of the field, the default applies."""
        if not isinstance(value, dict):
            return value
        dropped = {
            name
            for name, item in value.items()
            if item is None
            and name in cls.model_fields
            and not cls.model_fields[name].is_required()
            and not _accepts_none(cls.model_fields[name].annotation)
        }
        return {name: item for name, item in value.items() if name not in dropped} if dropped else value


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
NonNegativeFloat = Annotated[float, Field(ge=0)]

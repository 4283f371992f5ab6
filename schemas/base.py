"""Base class shared by every recipe model: unknown keys are errors, never ignored."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """A recipe section; a typo in a key must fail loudly instead of silently using a default."""

    model_config = ConfigDict(extra="forbid", validate_assignment=False)


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

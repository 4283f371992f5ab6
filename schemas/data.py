"""Prompt data: plain text (one prompt per line) or JSON lines with a text field."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator, model_validator

from schemas.base import LocalPath, StrictModel


class DataFile(StrictModel):
    """One prompt file; a bare string in YAML is shorthand for `{path: ...}`."""

    path: LocalPath = Field(description="A .txt (one prompt per line) or .jsonl file, relative to the recipe.")
    field: str = Field(default="text", description="Key holding the prompt in each .jsonl record.")
    limit: int | None = Field(default=None, gt=0, description="Use only the first N prompts.")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"path": value} if isinstance(value, str) else value

    @field_validator("path")
    @classmethod
    def _known_suffix(cls, path: str) -> str:
        """On the path itself, so that the problem is placed where the path was written (a `--set` included)."""
        if not path.strip():
            raise ValueError("empty path: give a .txt (one prompt per line) or .jsonl file")
        if not path.endswith((".txt", ".jsonl")):
            raise ValueError(f"unsupported data file {path!r}: use .txt (one prompt per line) or .jsonl")
        return path

    @model_validator(mode="after")
    def _field_of_jsonl(self) -> DataFile:
        if self.field != "text" and self.path.endswith(".txt"):
            raise ValueError(f"`field` picks a key of .jsonl records; {self.path!r} is plain text: remove `field`")
        return self


class Data(StrictModel):
    """Training and held-out prompts."""

    train: DataFile = Field(description="Training prompts.")
    eval: DataFile | None = Field(default=None, description="Held-out prompts for evaluation.")
    eval_fraction: float = Field(
        default=0.0, ge=0, lt=1, description="Split this fraction off `train` for evaluation when `eval` is absent."
    )
    shuffle: bool = Field(default=True, description="Shuffle training prompts every epoch.")

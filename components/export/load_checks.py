"""Messages for a damaged export: one line naming the file and saying to export again, never a raw traceback."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from components.registry import broken_type_hint
from components.safetensors_header import DamagedFileError, read_header

REEXPORT = "re-export with `recipe export RECIPE`"


def damaged(path: Path, reason: str) -> str:
    return f"{path} is damaged ({reason}); {REEXPORT}"


def first_damaged_weights(files: list[Path]) -> str | None:
    """The message for the first safetensors file whose header or size is wrong (cheap: no tensor is read)."""
    for file in files:
        try:
            read_header(file)
        except DamagedFileError as exc:
            return damaged(file, str(exc))
    return None


def validation_in_words(exc: ValidationError) -> str:
    """Pydantic's errors on one line, without its input dump and documentation links."""
    errors = exc.errors(include_url=False)
    return "; ".join(": ".join(filter(None, (".".join(map(str, e["loc"])), _said(e)))) for e in errors)


def _said(error: dict) -> str:
    if error["type"] != "union_tag_invalid":
        return error["msg"]
    tag = (error.get("ctx") or {}).get("tag")
    return (
        f"type {tag!r} is neither built in nor added by an installed package (install the package the export was "
        f"trained with){broken_type_hint(str(tag))}"
    )

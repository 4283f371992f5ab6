"""Read prompt files; a bad line is reported with its file and line number."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from components.errors import UserFacingError
from schemas.data import DataFile


class DataFileError(UserFacingError, ValueError):
    """A prompt file that cannot be used, with the place that is wrong."""


def read_prompts(spec: DataFile) -> list[str]:
    """Non-empty prompts of a .txt (one per line) or .jsonl (one record per line) file."""
    path = Path(spec.path)
    if not path.is_file():
        raise DataFileError(f"{path}: data file not found")
    prompts: list[str] = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            if path.suffix == ".jsonl":
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataFileError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
                if not isinstance(record, dict) or not isinstance(record.get(spec.field), str):
                    raise DataFileError(f"{path}:{number}: record has no string field {spec.field!r}")
                line = record[spec.field].strip()
                if not line:
                    continue
            prompts.append(line)
            if spec.limit is not None and len(prompts) >= spec.limit:
                break
    if not prompts:
        raise DataFileError(f"{path}: no prompts in file")
    return prompts


def prompts_digest(prompts: list[str]) -> str:
    """Identity of a prompt list, so a cache made from other data is never reused by mistake."""
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(prompt.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


def check_prompts(prompts: list[str], *, allow_empty: bool = False, error: type[Exception] = ValueError) -> None:
    """A clear error before any model runs (`error` lets each caller keep its own exception type)."""
    if isinstance(prompts, str) or not prompts:
        raise error("no prompts: give at least one prompt")
    for number, prompt in enumerate(prompts, 1):
        if not isinstance(prompt, str):
            raise error(f"prompt {number} is {type(prompt).__name__}, not a string")
        if not allow_empty and not prompt.strip():
            raise error(f"prompt {number} is empty: give some text to encode")

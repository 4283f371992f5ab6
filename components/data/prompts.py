"""Read prompt files; a bad line is reported with its file and line number."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from components.errors import UserFacingError
from schemas.data import DataFile


class DataFileError(UserFacingError, ValueError):
    """A prompt file that cannot be used, with the place that is wrong."""


def data_file_problem(path: Path) -> str | None:
    """Why a prompt file cannot be opened (`recipe validate` asks before a run does), or None."""
    if path.is_dir():
        return f"{path} is a directory, not a data file: name a .txt or .jsonl file in it"
    if path.exists() and not path.is_file():
        return f"{path} is not a regular file (a pipe, socket or device): name a .txt or .jsonl file"
    if not path.is_file():
        return f"data file not found: {path}"
    if not os.access(path, os.R_OK):
        return f"cannot read data file {path}: permission denied"
    return None


def utf8_problem(path: Path) -> str:
    """Where the first byte that is not UTF-8 sits: line number and byte offset, for someone with a hex editor.
    Lines split at \\n, which never occurs inside a UTF-8 sequence."""
    offset = 0
    with path.open("rb") as handle:
        for number, line in enumerate(handle, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as exc:
                byte = line[exc.start]
                return (
                    f"{path}:{number}: not UTF-8 (byte 0x{byte:02x} at byte offset {offset + exc.start}): "
                    "save it as UTF-8"
                )
            offset += len(line)
    return f"{path}: not UTF-8: save it as UTF-8"


def read_prompts(spec: DataFile) -> list[str]:
    """Non-empty prompts of a .txt (one per line) or .jsonl (one record per line) file."""
    path = Path(spec.path)
    problem = data_file_problem(path)
    if problem is not None:
        raise DataFileError(problem)
    try:
        return _read_prompts(path, spec)
    except UnicodeDecodeError:
        raise DataFileError(utf8_problem(path)) from None
    except OSError as exc:
        raise DataFileError(f"cannot read data file {path}: {exc.strerror or exc}") from None


def _read_prompts(path: Path, spec: DataFile) -> list[str]:
    prompts: list[str] = []
    with path.open(encoding="utf-8-sig") as handle:  # a byte-order mark some editors write is not prompt text
        for number, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            if path.suffix == ".jsonl":
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataFileError(f"{path}:{number}: invalid JSON: {exc.msg}") from None
                except RecursionError:
                    raise DataFileError(f"{path}:{number}: JSON nested too deeply to be a prompt record") from None
                if not isinstance(record, dict):
                    raise DataFileError(f"{path}:{number}: a record must be a JSON object with a {spec.field!r} key")
                if spec.field in record and not isinstance(record[spec.field], str):
                    kind = "null" if record[spec.field] is None else type(record[spec.field]).__name__
                    raise DataFileError(f"{path}:{number}: field {spec.field!r} holds {kind}, not text")
                if not isinstance(record.get(spec.field), str):
                    keys = ", ".join(map(repr, record)) or "none"
                    raise DataFileError(
                        f"{path}:{number}: record has no string field {spec.field!r} (its keys: {keys}); set this "
                        "data file's `field:` to the key that holds the prompt"
                    )
                line = record[spec.field].strip()
                if not line:
                    continue
            prompts.append(line)
            if spec.limit is not None and len(prompts) >= spec.limit:
                break
    if not prompts:
        raise DataFileError(f"{path}: no prompts in file (one per line, blank lines are skipped)")
    return prompts


def prompts_digest(prompts: list[str]) -> str:
    """Identity of a prompt list, so a cache made from other data is never reused by mistake."""
    digest = hashlib.sha256()
    for prompt in prompts:
        digest.update(prompt.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


KEY_LENGTH = 16  # hex digits of `prompt_key`


def prompt_key(prompt: str) -> str:
    """One prompt's identity: what lets outputs written for it (a cache row, an answer) be found again after the
    data around it changed."""
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:KEY_LENGTH]


def check_prompts(prompts: list[str], *, allow_empty: bool = False, error: type[Exception] = ValueError) -> None:
    """A clear error before any model runs (`error` lets each caller keep its own exception type)."""
    if isinstance(prompts, str) or not prompts:
        raise error("no prompts: give at least one prompt")
    for number, prompt in enumerate(prompts, 1):
        if not isinstance(prompt, str):
            raise error(f"prompt {number} is {type(prompt).__name__}, not a string")
        if not allow_empty and not prompt.strip():
            raise error(f"prompt {number} is empty: give some text to encode")

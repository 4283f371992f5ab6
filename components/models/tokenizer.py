"""Fast tokenizers only: alignment needs character offsets, which slow (Python) tokenizers do not give."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from components.models.source import ModelSourceError, locate
from schemas.models import ModelSource


def _from_file(path: Path) -> PreTrainedTokenizerFast:
    try:
        return PreTrainedTokenizerFast(tokenizer_file=str(path))
    except Exception as exc:  # tokenizers raises its own exception types for a malformed file
        raise ModelSourceError(f"{path}: not a tokenizers JSON file: {exc}") from exc


def load_tokenizer(source: ModelSource) -> PreTrainedTokenizerFast:
    """From `tokenizer` (directory, tokenizer.json file, or cached hub id), defaulting to `model`; never online."""
    reference = source.tokenizer or source.model
    if reference is None:
        raise ModelSourceError("no tokenizer: set `tokenizer` (an inline `config` has none of its own)")
    location = locate(reference)
    path = Path(location.ref)
    if location.kind == "local" and path.is_file():
        return _from_file(path)
    if location.kind == "local" and path.is_dir() and not any(path.iterdir()):
        raise ModelSourceError(f"{path}: empty directory, no tokenizer here (give the folder with tokenizer.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            location.ref,
            revision=source.revision,
            trust_remote_code=source.trust_remote_code,
            local_files_only=True,
        )
    except (OSError, ValueError) as exc:
        if location.kind == "local" and (path / "tokenizer.json").is_file():
            return _from_file(path / "tokenizer.json")
        if location.kind == "hub":
            raise ModelSourceError(
                f"no local copy of tokenizer {location.ref!r}: download it first "
                f"(huggingface-cli download {location.ref}) or give a local directory / tokenizer.json file"
            ) from exc
        raise ModelSourceError(f"{location.ref}: cannot load a tokenizer: {exc}") from exc
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ModelSourceError(
            f"{location.ref}: {type(tokenizer).__name__} is not a fast tokenizer; alignment needs character offsets "
            "(ship a tokenizer.json)"
        )
    return tokenizer


def pad_id(tokenizer) -> int:
    """The id padding is written with; padded positions are masked, so a tokenizer without one pads with 0."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

"""Fast tokenizers only: alignment needs character offsets, which slow (Python) tokenizers do not give."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer, PreTrainedTokenizerFast

from components.models.source import ModelSourceError, download_command, locate
from schemas.models import ModelSource

# What a folder holding a tokenizer has at least one of (fast, SentencePiece, BPE and WordPiece formats).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "spiece.model",
    "vocab.json",
    "vocab.txt",
)
_PROBE = "a photo of a cat"


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
    if location.kind == "local" and path.is_dir() and not any((path / name).is_file() for name in TOKENIZER_FILES):
        # transformers would build an empty tokenizer from a config.json alone, and every prompt would be no tokens
        raise ModelSourceError(
            f"{path}: no tokenizer files here (none of {', '.join(TOKENIZER_FILES)}); a model saved without its "
            "tokenizer needs `tokenizer:` set to the folder or tokenizer.json it was trained with"
        )
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
                f"({download_command(location.ref, source.revision)}) or give a local directory / tokenizer.json file"
            ) from exc
        raise ModelSourceError(f"{location.ref}: cannot load a tokenizer: {exc}") from exc
    if not isinstance(tokenizer, PreTrainedTokenizerFast):
        raise ModelSourceError(
            f"{location.ref}: {type(tokenizer).__name__} is not a fast tokenizer; alignment needs character offsets "
            "(ship a tokenizer.json)"
        )
    if not tokenizer(_PROBE, add_special_tokens=False)["input_ids"]:
        raise ModelSourceError(
            f"{location.ref}: this tokenizer turns {_PROBE!r} into no tokens (it has {len(tokenizer)}): it is not a "
            "usable tokenizer; give the folder or tokenizer.json the model was trained with"
        )
    return tokenizer


def pad_id(tokenizer) -> int:
    """The id padding is written with; padded positions are masked, so a tokenizer without one pads with 0."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0

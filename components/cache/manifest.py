"""What a cache was made from; a cache that does not match the recipe is refused, naming the difference."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.cache.weights import comparable, weights_fingerprint
from schemas import Recipe

if TYPE_CHECKING:
    from recipe_runner.errors import Problem
    from recipe_runner.loader import LoadedRecipe

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def _tokenizer_fingerprint(recipe: Recipe) -> str:
    """Hash of the tokenizer's files when they are local, else its name."""
    source = recipe.teacher.tokenizer or recipe.teacher.model or ""
    path = Path(source)
    if path.is_file():
        return _sha(path.read_text(encoding="utf-8"))
    if (path / "tokenizer.json").is_file():
        return _sha((path / "tokenizer.json").read_text(encoding="utf-8"))
    return source


# Beside tokenizer.json, the files that set a tokenizer's special tokens: the pad token among them, whose id is in
# every cached row of a Chroma-masked teacher (its one visible pad).
_SPECIAL_TOKEN_FILES = ("tokenizer_config.json", "special_tokens_map.json")


def _special_tokens_fingerprint(recipe: Recipe) -> str | None:
    """Hash of a local tokenizer folder's special-token files; None for a hub tokenizer or a folder without them."""
    folder = Path(recipe.teacher.tokenizer or recipe.teacher.model or "")
    found = [folder / name for name in _SPECIAL_TOKEN_FILES if (folder / name).is_file()]
    if not found:
        return None
    return _sha("\0".join(path.read_text(encoding="utf-8") for path in found))


def _teacher_name(recipe: Recipe) -> str:
    """The hub id; for a local folder its config.json, not its path: a project folder that moves, or a models
    folder mounted elsewhere on another machine, keeps its cache (the weights fingerprint tells copies apart)."""
    teacher = recipe.teacher
    if teacher.model is None:
        return "inline:" + _sha(json.dumps(teacher.config, sort_keys=True))
    config = Path(teacher.model) / "config.json"
    if Path(teacher.model).is_absolute() and config.is_file():
        try:
            return "local:" + _sha(config.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError):
            return teacher.model
    return teacher.model


def teacher_source_identity(recipe: Recipe) -> dict[str, Any]:
    """Which teacher, with which weights, dtype and tokenizer: what any output written from it depends on."""
    teacher = recipe.teacher
    return {
        "teacher": _teacher_name(recipe),
        "teacher_path": teacher.model,  # for messages only: an output is not tied to where its teacher is
        "weights": weights_fingerprint(teacher),
        "revision": teacher.revision,
        "teacher_dtype": teacher.dtype,
        "tokenizer": _tokenizer_fingerprint(recipe),
        "special_tokens": _special_tokens_fingerprint(recipe),
        "seed": recipe.hardware.seed if teacher.config is not None else None,
    }


def teacher_identity(recipe: Recipe) -> dict[str, Any]:
    """Everything that changes the cached numbers, apart from the prompts themselves."""
    teacher = recipe.teacher
    return {
        "format": FORMAT_VERSION,
        **teacher_source_identity(recipe),
        "max_length": teacher.max_length,
        "chroma_mask": teacher.chroma_mask,
        "cache_dtype": teacher.cache.dtype if teacher.cache else None,
    }


def read_manifest(split_dir: Path) -> dict[str, Any] | None:
    file = split_dir / MANIFEST
    if not file.is_file():
        return None
    data = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise json.JSONDecodeError("manifest is not a JSON object", "", 0)
    return data


# Recipe fields behind identity keys, for messages; the other keys get a sentence of their own in _difference.
_FIELDS = {
    "revision": "teacher.revision",
    "teacher_dtype": "teacher.dtype",
    "max_length": "teacher.max_length",
    "chroma_mask": "teacher.chroma_mask",
    "cache_dtype": "teacher.cache.dtype",
    "seed": "hardware.seed",
}
# Keys that only exist because of the teacher: when the teacher itself differs they add nothing.
_FOLLOW_TEACHER = ("weights", "seed", "tokenizer", "special_tokens")
# Keys added to identities after outputs were first written: an older manifest without one says nothing against it.
ADDED_SINCE = ("special_tokens",)


def _teacher_words(identity: dict[str, Any]) -> str:
    value = str(identity.get("teacher"))
    if value.startswith("inline:"):
        return "an inline config (random weights)"
    return f"the folder {identity.get('teacher_path')!r}" if value.startswith("local:") else repr(value)


def _same_local_teacher(found: dict[str, Any], expected: dict[str, Any]) -> bool:
    """A manifest written before local teachers were named by their config names the folder's path; it is the
    same teacher when the weights fingerprint agrees, wherever the folder is now."""
    cached = str(found.get("teacher"))
    if not (str(expected["teacher"]).startswith("local:") and cached.startswith("/")):
        return False
    if comparable(found.get("weights"), expected.get("weights")):
        return found.get("weights") == expected.get("weights")
    return cached == expected.get("teacher_path")  # fingerprints of two kinds: only the same folder says so


def _value_words(value: Any) -> str:
    return "not set" if value is None else repr(value)


def _difference(key: str, found: dict[str, Any], expected: dict[str, Any]) -> str:
    """One difference in words: a value the recipe leaves unset is "not set", a digest is never shown."""
    cached, now = found.get(key), expected[key]
    if key == "teacher":
        for kind, what in (("inline:", "inline config"), ("local:", "config.json")):
            if str(cached).startswith(kind) and str(now).startswith(kind):
                return f"the teacher's {what} differs from the one the cache was made with"
        made, wanted = _teacher_words(found), _teacher_words(expected)
        return f"the teacher differs: the cache was made with {made}, the recipe has {wanted}"
    if key == "weights":
        return (
            f"the teacher's weights in {expected['teacher_path']} changed since the cache was written "
            "(a weight file or config.json differs in name, size or contents)"
        )
    if key == "tokenizer":
        return "the teacher tokenizer differs from the one the cache was made with"
    if key == "special_tokens":
        return (
            "the teacher tokenizer's special tokens (tokenizer_config.json, special_tokens_map.json: the pad token, "
            "say) differ from those the cache was made with"
        )
    if key == "format":
        return f"the cache was written in format {cached!r}, this version reads format {now!r}"
    field = _FIELDS.get(key, key)
    return f"{field} is {_value_words(now)} in the recipe but was {_value_words(cached)} when the cache was written"


def _unknown(key: str, found: dict[str, Any], value: Any) -> bool:
    """A weights fingerprint that an older manifest lacks, that cannot be taken now, or that was taken another
    way (an older manifest's file times) proves nothing; nor does a key an older manifest was written without."""
    if key in ADDED_SINCE and key not in found:
        return True
    return key == "weights" and not comparable(found.get(key), value)


def mismatches(manifest: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Human-readable differences between a cache's manifest and what the recipe would produce."""
    found = manifest.get("identity", {})
    differing = [
        key
        for key, value in expected.items()
        if key != "teacher_path" and found.get(key) != value and not _unknown(key, found, value)
    ]
    if "teacher" in differing and _same_local_teacher(found, expected):
        differing.remove("teacher")
    if "teacher" in differing:
        differing = [key for key in differing if key not in _FOLLOW_TEACHER]
    return [_difference(key, found, expected) for key in differing]


def cache_problems(loaded: LoadedRecipe) -> list[Problem]:
    """An existing cache made with other settings is an error now, not a silent mix later.

    One problem per cache, naming its splits: the train and eval splits nearly always differ alike.
    """
    cache = loaded.recipe.teacher_cache
    if cache is None or not Path(cache.dir).is_dir():
        return []
    where = ("teacher", "cache", "dir")
    problems = []
    expected = teacher_identity(loaded.recipe)
    splits_by_differences: dict[tuple[str, ...], list[str]] = {}
    for split_dir in sorted(p for p in Path(cache.dir).iterdir() if p.is_dir()):
        try:
            manifest = read_manifest(split_dir)
        except (OSError, json.JSONDecodeError) as exc:
            message = f"unreadable cache manifest in {split_dir}: {exc}; delete {split_dir} and rerun `recipe cache`"
            problems.append(loaded.problem(where, message))
            continue
        differences = tuple(mismatches(manifest, expected)) if manifest is not None else ()
        if differences:
            splits_by_differences.setdefault(differences, []).append(split_dir.name)
    for differences, splits in splits_by_differences.items():
        message = (
            f"cache {cache.dir} ({' and '.join(splits)}) does not match the recipe: {'; '.join(differences)}. "
            "Delete it and rerun `recipe cache`, or point teacher.cache.dir elsewhere"
        )
        problems.append(loaded.problem(where, message))
    return problems

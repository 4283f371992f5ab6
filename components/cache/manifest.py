"""What a cache was made from; a cache that does not match the recipe is refused, naming the difference."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def teacher_identity(recipe: Recipe) -> dict[str, Any]:
    """Everything that changes the cached numbers, apart from the prompts themselves."""
    teacher = recipe.teacher
    model = teacher.model or "inline:" + _sha(json.dumps(teacher.config, sort_keys=True))
    return {
        "format": FORMAT_VERSION,
        "teacher": model,
        "revision": teacher.revision,
        "teacher_dtype": teacher.dtype,
        "tokenizer": _tokenizer_fingerprint(recipe),
        "max_length": teacher.max_length,
        "chroma_mask": teacher.chroma_mask,
        "cache_dtype": teacher.cache.dtype if teacher.cache else None,
        "seed": recipe.hardware.seed if teacher.config is not None else None,
    }


def read_manifest(split_dir: Path) -> dict[str, Any] | None:
    file = split_dir / MANIFEST
    if not file.is_file():
        return None
    data = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise json.JSONDecodeError("manifest is not a JSON object", "", 0)
    return data


def mismatches(manifest: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Human-readable differences between a cache's manifest and what the recipe would produce."""
    found = manifest.get("identity", {})
    return [
        f"{key} is {found.get(key)!r} in the cache but {value!r} in the recipe"
        for key, value in expected.items()
        if found.get(key) != value
    ]


def cache_problems(loaded: LoadedRecipe) -> list[Problem]:
    """An existing cache made with other settings is an error now, not a silent mix later."""
    cache = loaded.recipe.teacher.cache
    if cache is None or not Path(cache.dir).is_dir():
        return []
    problems = []
    expected = teacher_identity(loaded.recipe)
    for split_dir in sorted(p for p in Path(cache.dir).iterdir() if p.is_dir()):
        try:
            manifest = read_manifest(split_dir)
        except (OSError, json.JSONDecodeError) as exc:
            problems.append(loaded.problem(("teacher", "cache", "dir"), f"unreadable cache manifest: {exc}"))
            continue
        if manifest is None:
            continue
        for difference in mismatches(manifest, expected):
            problems.append(
                loaded.problem(
                    ("teacher", "cache", "dir"),
                    f"cache {split_dir} does not match: {difference}; delete it or point cache.dir elsewhere",
                )
            )
    return problems

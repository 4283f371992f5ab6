"""Small helpers shared by the YAML loader tests: write a recipe file, and read a problem's place."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipe_runner.errors import Position, Problem, RecipeError

BASE_RECIPE = Path(__file__).resolve().parents[1] / "assets" / "broken" / "base.yaml"


def write(directory: Path, name: str, text: str) -> Path:
    file = directory / name
    file.write_text(text, encoding="utf-8")
    return file


def where(position: Position) -> tuple[str, int, int]:
    return Path(position.file).name, position.line, position.col


def only_problem(exc: pytest.ExceptionInfo[RecipeError]) -> Problem:
    assert len(exc.value.problems) == 1, exc.value.problems
    return exc.value.problems[0]

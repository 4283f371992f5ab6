"""Problems in a recipe, reported the way a compiler reports them: file:line:col: field: message."""

from __future__ import annotations

import os
from dataclasses import dataclass

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Position:
    """Where a value came from: a YAML file position, or a command-line override."""

    file: str
    line: int = 0
    col: int = 0

    def __str__(self) -> str:
        shown = _relative(self.file)
        return f"{shown}:{self.line}:{self.col}" if self.line else shown

    @property
    def is_override(self) -> bool:
        """A `--set` on the command line, not a place in a file."""
        return self.file.startswith(OVERRIDE_PREFIX)


OVERRIDE_PREFIX = "--set #"  # how a Position names a command-line override: `--set #2 (KEY=VALUE)`


def _relative(file: str) -> str:
    if not os.path.isabs(file):
        return file
    try:
        rel = os.path.relpath(file)
    except ValueError:
        return file
    return file if rel.startswith("../..") else rel


def dotted(path: Path_) -> str:
    """`('stages', 0, 'lr')` -> `stages[0].lr`, the way people write it in messages."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<recipe>"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a recipe."""

    position: Position
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.position}: {self.field}: {self.message}"


class RecipeError(Exception):
    """Every problem found in a recipe at once; the CLI prints them and exits with code 2."""

    def __init__(self, problems: list[Problem]) -> None:
        # Duplicates dropped in order, then a stable sort: problems at one place keep the order they were found in.
        unique = list(dict.fromkeys(problems))
        self.problems = sorted(unique, key=lambda p: (p.position.file, p.position.line, p.position.col))
        super().__init__("\n".join(str(p) for p in self.problems))

    @classmethod
    def single(cls, position: Position, field: str, message: str) -> RecipeError:
        return cls([Problem(position, field, message)])

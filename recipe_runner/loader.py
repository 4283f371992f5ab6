"""Recipe file -> validated `schemas.Recipe`, with every problem reported at its YAML position."""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from components.registry import recipe_class
from recipe_runner.errors import Path_, Problem, RecipeError, dotted
from recipe_runner.path_problems import resolve_or_reason
from recipe_runner.schema_errors import problems_from_validation
from recipe_runner.yaml_source import (
    ENVIRONMENT_VARIABLE,
    UNEXPANDED,
    UNEXPANDED_SET,
    SourcedTree,
    apply_overrides,
    load_tree,
)
from schemas import Recipe
from schemas.base import PathMarker


@dataclass
class LoadedRecipe:
    """A validated recipe and where each of its values was written (for later error messages)."""

    recipe: Recipe
    file: Path
    tree: SourcedTree

    def problem(self, path: Path_, message: str) -> Problem:
        return Problem(self.tree.position_of(path), dotted(path), message)


def _path_marker(field: Any) -> PathMarker | None:
    for meta in field.metadata:
        if isinstance(meta, PathMarker):
            return meta
    for arg in typing.get_args(field.annotation):
        for meta in getattr(arg, "__metadata__", ()):
            if isinstance(meta, PathMarker):
                return meta
    return None


def _looks_local(value: str) -> bool:
    return value.startswith((".", "/", "~")) or value.endswith((".json", ".txt", ".jsonl")) or value.count("/") != 1


def resolve_paths(
    node: Any, path: Path_, tree: SourcedTree, problems: list[Problem], elsewhere: dict[str, str] | None = None
) -> None:
    """Relative paths are relative to the file that wrote them, also through `extends`. `elsewhere` collects, by
    field, what to say of a path found only relative to the current folder (written as if run from there)."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            resolve_paths(item, path + (index,), tree, problems, elsewhere)
        return
    if not isinstance(node, BaseModel):
        return
    for name, field in type(node).model_fields.items():
        value = getattr(node, name)
        marker = _path_marker(field)
        if marker is not None and isinstance(value, str) and not value.strip():
            where = path + (name,)
            problems.append(Problem(tree.position_of(where), dotted(where), "empty path: give a file or directory"))
        elif marker is not None and isinstance(value, str) and ENVIRONMENT_VARIABLE.search(value):
            where = path + (name,)
            position = tree.position_of(where)
            # On the command line the shell expands it, unless single quotes kept it from doing so.
            said = UNEXPANDED_SET if position.is_override else UNEXPANDED
            problems.append(Problem(position, dotted(where), f"{value!r}: {said}"))
        elif marker is not None and isinstance(value, str):
            origin = tree.position_of(path + (name,)).file
            base = Path(origin).parent if Path(origin).is_file() else Path.cwd()
            candidate, reason = resolve_or_reason(Path(value), base)
            if candidate is None:  # `~nobody/x`, a NUL byte, a symlink loop, a name too long
                problems.append(
                    Problem(tree.position_of(path + (name,)), dotted(path + (name,)), f"bad path {value!r}: {reason}")
                )
                continue
            if marker.must_be_local or candidate.exists() or _looks_local(value):
                object.__setattr__(node, name, str(candidate))
            if elsewhere is not None and not candidate.exists() and Path(origin).is_file():
                here = Path.cwd() / Path(value)
                if not Path(value).is_absolute() and here.exists():
                    meant = os.path.relpath(here, base)
                    said = f" (a path in a recipe is relative to the recipe's folder, {base}: from there, {value} in "
                    elsewhere[dotted(path + (name,))] = said + f"the current folder is {meant})"
        else:
            resolve_paths(value, path + (name,), tree, problems, elsewhere)


def load_recipe(
    file: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    check: bool = True,
    allow_remote_code: bool = False,
    unread: frozenset[str] = frozenset(),
) -> LoadedRecipe:
    """Parse, merge `extends`, apply `--set`, validate, resolve paths and run the semantic checks.

    `allow_remote_code` is the permission of the person running the command (`--trust-remote-code`), never the
    recipe's: without it a `trust_remote_code: true` is a problem, found before any model config is read. With
    `check=False` nothing is checked, so such a recipe must not be used to build models.
    """
    tree = load_tree(Path(file))
    apply_overrides(tree, overrides)
    try:
        schema = recipe_class()  # with the loss types of installed packages
        recipe = schema.model_validate(tree.data)
    except ValidationError as exc:
        problems = problems_from_validation(exc, tree, schema)
        if check:
            from recipe_runner.partial_checks import checks_beside_schema_problems

            problems += checks_beside_schema_problems(tree, Path(file).resolve(), exc)
        raise RecipeError(problems) from None
    path_problems: list[Problem] = []
    elsewhere: dict[str, str] = {}
    resolve_paths(recipe, (), tree, path_problems, elsewhere)
    if path_problems:
        raise RecipeError(path_problems)
    loaded = LoadedRecipe(recipe, Path(file).resolve(), tree)
    if check:
        from recipe_runner.checks import semantic_problems

        problems = semantic_problems(loaded, allow_remote_code, unread)
        if problems:
            raise RecipeError([_said_where_it_is(problem, elsewhere) for problem in problems])
    return loaded


def _said_where_it_is(problem: Problem, elsewhere: dict[str, str]) -> Problem:
    """A problem of a path that the current folder has: the path the recipe needs to name it."""
    hint = elsewhere.get(problem.field) or elsewhere.get(f"{problem.field}.path")  # `train: x.txt` is its path
    return Problem(problem.position, problem.field, problem.message + hint) if hint else problem

"""The semantic checks that can run beside schema problems: a recipe with a typo in one section still hears, in
the same `validate`, about a missing learning rate in a stage or an empty data file.

Each check runs only when every section it reads passed the schema on its own; stages are taken one by one, so
one stage's typo does not hide another stage's missing `lr`. Checks that build models wait for a whole recipe.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from pydantic import TypeAdapter, ValidationError

from components.registry import recipe_class
from recipe_runner.errors import Problem
from recipe_runner.loader import LoadedRecipe, resolve_paths
from recipe_runner.yaml_source import SourcedTree
from schemas.extended import stage_class
from schemas.stages import Stage


def _sections(tree: SourcedTree, broken: set[str]) -> dict[str, Any]:
    """Every section that is valid on its own (given, or left to its default), typed."""
    sections = {}
    for name, field in recipe_class().model_fields.items():
        if name in broken or (name not in tree.data and field.is_required()):
            continue
        try:
            sections[name] = (
                TypeAdapter(field.annotation).validate_python(tree.data[name])
                if name in tree.data
                else field.get_default(call_default_factory=True)
            )
        except ValidationError:  # fails only beside the others (a cross-field rule): not this pass's to say
            continue
    return sections


def _valid_stages(tree: SourcedTree) -> list[tuple[int, Stage]]:
    raw = tree.data.get("stages")
    stages = []
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        try:
            stages.append((index, TypeAdapter(stage_class(recipe_class())).validate_python(item)))
        except ValidationError:
            continue
    return stages


def checks_beside_schema_problems(tree: SourcedTree, file: Path, schema: ValidationError) -> list[Problem]:
    from recipe_runner.checks import hardware_problems, stage_problems
    from recipe_runner.file_checks import data_problems

    broken = {str(error["loc"][0]) for error in schema.errors() if error["loc"]}
    sections = _sections(tree, broken)
    loaded = LoadedRecipe(SimpleNamespace(**sections), file, tree)  # type: ignore[arg-type]
    problems: list[Problem] = []
    stages = _valid_stages(tree)
    if stages and {"bolt_on", "alignment"} <= sections.keys():
        problems += stage_problems(loaded, stages)
    if "data" in sections:
        path_problems: list[Problem] = []
        resolve_paths(sections["data"], ("data",), tree, path_problems)
        problems += path_problems or data_problems(loaded)
    if {"hardware", "student"} <= sections.keys():
        problems += hardware_problems(loaded)
    return problems

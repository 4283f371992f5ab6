"""Checks of the architectures themselves, before any width is compared: inline configs that transformers accepts
but builds wrong, and architectures that fail to build at all (found on the meta device: no memory, no download).
A role that fails here is left out of `configs`, so that no later check measures a broken architecture."""

from __future__ import annotations

from typing import TYPE_CHECKING

from recipe_runner.errors import Problem
from recipe_runner.loader import LoadedRecipe

if TYPE_CHECKING:
    from torch import nn
    from transformers import PretrainedConfig


def inline_config_problems(loaded: LoadedRecipe, configs: dict[str, PretrainedConfig]) -> list[Problem]:
    from components.models.config_checks import inline_config_problems as problems_of

    problems = []
    for role in list(configs):
        values = getattr(loaded.recipe, role).config
        if values is None:
            continue  # a config.json of a published model is as its authors wrote it
        found = problems_of(values, configs[role])
        for key, message in found:
            problems.append(loaded.problem((role, "config", key), message))
        if found:
            del configs[role]
    return problems


def built_on_meta(
    loaded: LoadedRecipe, configs: dict[str, PretrainedConfig]
) -> tuple[dict[str, nn.Module], list[Problem]]:
    """Each readable architecture built as the run would build it, on the meta device."""
    from components.models import build_model
    from recipe_runner.trainer.stops import what_failed

    models, problems = {}, []
    for role in list(configs):
        source = getattr(loaded.recipe, role)
        try:
            models[role] = build_model(source, role, meta=True)
        except Exception as exc:  # transformers and torch raise many kinds for an architecture they cannot build
            field = (role, "config") if source.config is not None else (role, "model")
            problems.append(loaded.problem(field, f"cannot build this architecture: {what_failed(exc)}"))
            del configs[role]
    return models, problems


def position_problems(loaded: LoadedRecipe, configs: dict[str, PretrainedConfig]) -> list[Problem]:
    """A max_length past the positions an architecture has: learned position tables fail on the first long
    batch, rotary ones run on positions they were never trained at, and neither says so."""
    problems = []
    for role, config in configs.items():
        limit = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)
        length = getattr(loaded.recipe, role).max_length
        if isinstance(limit, int) and length > limit:
            problems.append(
                loaded.problem(
                    (role, "max_length"),
                    f"{length} is beyond the {limit} positions of the {role}'s architecture (max_position_embeddings): "
                    "lower max_length, or give an architecture with more positions",
                )
            )
    return problems

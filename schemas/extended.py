"""The recipe schema with loss types that installed packages add: the same `Recipe`, whose stages' `losses`
union also takes those types, so a recipe names them by `type:` and is validated (and its mistakes placed) as
for the built-in ones. Without added types it is `Recipe` itself."""

from __future__ import annotations

import copy
import typing
from functools import cache
from typing import Annotated, Union

from pydantic import Field, create_model

from schemas.base import StrictModel
from schemas.recipe import Recipe
from schemas.stages import Loss, Stage

BUILT_IN_LOSSES: tuple[type, ...] = typing.get_args(typing.get_args(Loss)[0])


def _field(model: type, name: str, annotation: object) -> tuple[object, object]:
    """`model`'s field `name` (description, bounds, default) with another annotation."""
    info = copy.copy(model.model_fields[name])
    info.annotation = annotation  # type: ignore[assignment]
    return annotation, info


@cache
def recipe_with(added_losses: tuple[type[StrictModel], ...]) -> type[Recipe]:
    """`Recipe` whose stages also take `added_losses` (subclasses of `TierLoss` or `DivergenceLoss`, each with its
    own `type`)."""
    if not added_losses:
        return Recipe
    losses = Annotated[Union[(*BUILT_IN_LOSSES, *added_losses)], Field(discriminator="type")]  # noqa: UP007
    stage = create_model(  # type: ignore[call-overload]
        "Stage", __base__=Stage, __module__=Stage.__module__, losses=_field(Stage, "losses", list[losses])
    )
    return create_model(  # type: ignore[call-overload]
        "Recipe", __base__=Recipe, __module__=Recipe.__module__, stages=_field(Recipe, "stages", list[stage])
    )


def stage_class(recipe_class: type[Recipe]) -> type[Stage]:
    """The stage model inside `recipe_class` (for checks that validate one stage at a time)."""
    return typing.get_args(recipe_class.model_fields["stages"].annotation)[0]

"""The recipe schema with the types that installed packages add: the same `Recipe`, whose stages' `losses` and
bolt-on `layers` unions also take those types, so a recipe names them by `type:` and is validated (and its
mistakes placed) as for the built-in ones. Without added types it is `Recipe` itself."""

from __future__ import annotations

import copy
import typing
from functools import cache
from typing import Annotated, Union

from pydantic import BaseModel, Field, create_model

from schemas.base import StrictModel
from schemas.bolt_on import BoltOn, BoltOnLayer
from schemas.recipe import Recipe
from schemas.stages import Loss, Stage

BUILT_IN_LOSSES: tuple[type, ...] = typing.get_args(typing.get_args(Loss)[0])
BUILT_IN_LAYERS: tuple[type, ...] = typing.get_args(typing.get_args(BoltOnLayer)[0])


def with_fields(model: type[BaseModel], **annotations: object) -> type[BaseModel]:
    """A subclass of `model` whose named fields take other annotations, each keeping its description, bounds
    and default."""
    fields = {}
    for name, annotation in annotations.items():
        info = copy.copy(model.model_fields[name])
        info.annotation = annotation  # type: ignore[assignment]
        fields[name] = (annotation, info)
    return create_model(model.__name__, __base__=model, __module__=model.__module__, **fields)  # type: ignore[call-overload]


def _union(built_in: tuple[type, ...], added: tuple[type, ...]) -> object:
    return Annotated[Union[(*built_in, *added)], Field(discriminator="type")]  # noqa: UP007


@cache
def recipe_with(added_losses: tuple[type[StrictModel], ...], added_layers: tuple[type[StrictModel], ...] = ()):
    """`Recipe` whose stages also take `added_losses` (subclasses of `TierLoss` or `DivergenceLoss`) and whose
    bolt-on also takes `added_layers` (subclasses of `BoltOnLayerSpec`), each with its own `type`."""
    changed: dict[str, object] = {}
    if added_losses:
        changed["stages"] = list[with_fields(Stage, losses=list[_union(BUILT_IN_LOSSES, added_losses)])]
    if added_layers:
        changed["bolt_on"] = with_fields(BoltOn, layers=list[_union(BUILT_IN_LAYERS, added_layers)])
    return with_fields(Recipe, **changed) if changed else Recipe


def stage_class(recipe_class: type[Recipe]) -> type[Stage]:
    """The stage model inside `recipe_class` (for checks that validate one stage at a time)."""
    return typing.get_args(recipe_class.model_fields["stages"].annotation)[0]

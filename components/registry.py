"""Loss types that installed packages add, found through their `recipe.components` entry points.

A recipe names a type, never code: only packages the person installed run, and a shared recipe that names a type
from a package says which type is missing where it is not installed. A package declares, in its pyproject.toml::

    [project.entry-points."recipe.components"]
    smooth_l2 = "my_package.losses:SMOOTH_L2"

where the object is a `VectorLossType` (embedding family: a `schemas.stages.TierLoss` schema and a distance per
aligned pair) or a `DivergenceType` (logits family: a `schemas.stages.DivergenceLoss` schema and a divergence per
token between two log-distributions). The schema's `type` is `Literal[<the entry point's name>]`, and each of its
fields has a description.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points

import torch

from components.errors import UserFacingError
from schemas.extended import BUILT_IN_LOSSES, recipe_with
from schemas.recipe import Recipe
from schemas.stages import DivergenceLoss, TierLoss

ENTRY_POINT_GROUP = "recipe.components"


class PluginError(UserFacingError, TypeError):
    """An installed package that declares a type it does not deliver as this module describes."""


@dataclass(frozen=True)
class VectorLossType:
    """An embedding-family loss from a package. `pair_loss(spec, student, teacher)` takes the recipe's entry (an
    instance of `schema`) and the aligned vectors of one tier, [pairs, width] each, and returns one distance per
    pair [pairs]; the stage averages them by pair weight, as for huber, cosine and mse."""

    schema: type[TierLoss]
    pair_loss: Callable[[TierLoss, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DivergenceType:
    """A logits-family divergence from a package. `divergence(spec, student, teacher)` takes the recipe's entry
    (an instance of `schema`) and both sides' log-probabilities, [tokens, vocabulary] each, already softened by
    the entry's temperature (fixed or dynamic), and returns one value per token [tokens]; the stage multiplies
    it by the temperature's square and averages it over tokens, as for forward_kl. It serves one vocabulary and,
    with `alignment`, the tokens both share (then each side has one more column: every other token together)."""

    schema: type[DivergenceLoss]
    divergence: Callable[[DivergenceLoss, torch.Tensor, torch.Tensor], torch.Tensor]


KINDS = {VectorLossType: TierLoss, DivergenceType: DivergenceLoss}  # what each kind's schema extends


@dataclass(frozen=True)
class InstalledTypes:
    """What the installed packages add, and which of their entry points could not be used (name -> why)."""

    vector_losses: dict[str, VectorLossType] = field(default_factory=dict)
    divergences: dict[str, DivergenceType] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)

    def schemas(self) -> tuple[type, ...]:
        return tuple(kind.schema for kind in (*self.vector_losses.values(), *self.divergences.values()))


def _tag(schema: type) -> object:
    annotation = schema.model_fields["type"].annotation if "type" in schema.model_fields else None
    args = typing.get_args(annotation)
    return args[0] if len(args) == 1 else None


def _problem(point: EntryPoint, loaded: object, taken: set[str]) -> str | None:
    if type(loaded) not in KINDS:
        return f"it is of type {type(loaded).__name__}, not a VectorLossType or DivergenceType of components.registry"
    base = KINDS[type(loaded)]
    if not (isinstance(loaded.schema, type) and issubclass(loaded.schema, base)):
        return f"the schema of a {type(loaded).__name__} must be a subclass of schemas.stages.{base.__name__}"
    if point.name in taken:
        return f"{point.name!r} is already a type (built in, or from another package)"
    if _tag(loaded.schema) != point.name:
        return f"its schema's `type` must be Literal[{point.name!r}], the entry point's name"
    undescribed = [name for name, info in loaded.schema.model_fields.items() if not info.description]
    if undescribed:
        return f"its schema's fields {', '.join(undescribed)} have no description (recipe schema prints them)"
    return None


def _where(point: EntryPoint) -> str:
    package = point.dist.name if point.dist is not None else "an unnamed package"
    return f"{package} ({point.value})"


@cache
def installed_types() -> InstalledTypes:
    """Read once per process: a package that fails is remembered as broken, and named only to a recipe that
    uses its type (an unrelated broken package does not stop every command)."""
    found = InstalledTypes()
    taken = {_tag(schema) for schema in BUILT_IN_LOSSES}
    for point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda p: p.name):
        try:
            loaded = point.load()
        except Exception as exc:  # noqa: BLE001 (any failure of someone else's package is reported, not raised)
            found.broken[point.name] = f"{_where(point)} does not import: {type(exc).__name__}: {exc}"
            continue
        problem = _problem(point, loaded, taken)
        if problem is not None:
            found.broken[point.name] = f"{_where(point)}: {problem}"
            continue
        kinds = found.vector_losses if isinstance(loaded, VectorLossType) else found.divergences
        kinds[point.name] = loaded  # type: ignore[assignment]
        taken.add(point.name)
    return found


def recipe_class() -> type[Recipe]:
    """The schema recipes are validated against: `Recipe`, with the installed packages' loss types."""
    return recipe_with(installed_types().schemas())


def vector_loss_of(spec: TierLoss) -> Callable[[TierLoss, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The distance per pair of a package's loss entry (a validated recipe only holds installed types)."""
    return installed_types().vector_losses[spec.type].pair_loss  # type: ignore[attr-defined]


def divergence_function(spec: DivergenceLoss) -> Callable[[DivergenceLoss, torch.Tensor, torch.Tensor], torch.Tensor]:
    """The per-token divergence of a package's loss entry."""
    return installed_types().divergences[spec.type].divergence  # type: ignore[attr-defined]


def broken_type_hint(name: str) -> str:
    """Why a `type:` the recipe names is not available although a package declares it ('' when none does)."""
    reason = installed_types().broken.get(name)
    return f"; the installed package {reason}: fix or reinstall it" if reason else ""

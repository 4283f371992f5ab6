"""Loss and bolt-on layer types that installed packages add, found through their `recipe.components` entry points.

A recipe names a type, never code: only packages the person installed run, and a shared recipe that names a type
from a package says which type is missing where it is not installed. A package declares, in its pyproject.toml::

    [project.entry-points."recipe.components"]
    smooth_l2 = "my_package.losses:SMOOTH_L2"

where the object is one of the kinds below. Its schema's `type` is `Literal[<the entry point's name>]`, and each
of the schema's fields has a description.
"""

from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib.metadata import EntryPoint, entry_points

import torch
from torch import nn

from schemas.bolt_on import BoltOnLayerSpec
from schemas.extended import BUILT_IN_LAYERS, BUILT_IN_LOSSES, recipe_with
from schemas.recipe import Recipe
from schemas.stages import DivergenceLoss, TierLoss

ENTRY_POINT_GROUP = "recipe.components"


@dataclass(frozen=True)
class VectorLossType:
    """An embedding-family loss. `pair_loss(spec, student, teacher)` takes the recipe's entry (an instance of
    `schema`, a `TierLoss`) and the aligned vectors of one tier, [pairs, width] each, and returns one distance per
    pair [pairs]; the stage averages them by pair weight, as for huber, cosine and mse."""

    schema: type[TierLoss]
    pair_loss: Callable[[TierLoss, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DivergenceType:
    """A logits-family divergence. `divergence(spec, student, teacher)` takes the recipe's entry (a
    `DivergenceLoss`) and both sides' log-probabilities, [tokens, vocabulary] each, already softened by the
    entry's temperature (fixed or dynamic), and returns one value per token [tokens]; the stage multiplies it by
    the temperature's square and averages it over tokens, as for forward_kl. It serves one vocabulary and, with
    `alignment`, the tokens both share (then each side has one more column: every other token together)."""

    schema: type[DivergenceLoss]
    divergence: Callable[[DivergenceLoss, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class BoltOnLayerType:
    """A bolt-on layer. `module(spec, in_width)` builds it (on whatever device torch's default is: `recipe plan`
    builds on the meta device); its `forward(hidden, mask)` maps [batch, tokens, in_width] to [batch, tokens,
    out_width(spec, in_width)], `mask` bool [batch, tokens] with True at real tokens. With `packs` the layer also
    takes a packed batch: hidden [1, real tokens, in_width] with a `components.packed_sequences.PackedSequences`
    in the mask's place (a layer that treats each token alone can ignore the mask either way)."""

    schema: type[BoltOnLayerSpec]
    module: Callable[[BoltOnLayerSpec, int], nn.Module]
    out_width: Callable[[BoltOnLayerSpec, int], int]
    packs: bool = False


KINDS = {VectorLossType: TierLoss, DivergenceType: DivergenceLoss, BoltOnLayerType: BoltOnLayerSpec}
Kind = VectorLossType | DivergenceType | BoltOnLayerType


@dataclass(frozen=True)
class InstalledTypes:
    """What the installed packages add (name -> kind), and which of their entry points could not be used
    (name -> why)."""

    types: dict[str, Kind] = field(default_factory=dict)
    broken: dict[str, str] = field(default_factory=dict)

    def schemas(self, *kinds: type) -> tuple[type, ...]:
        return tuple(kind.schema for kind in self.types.values() if isinstance(kind, kinds))


def _tag(schema: type) -> object:
    annotation = schema.model_fields["type"].annotation if "type" in schema.model_fields else None
    args = typing.get_args(annotation)
    return args[0] if len(args) == 1 else None


def _problem(point: EntryPoint, loaded: object, taken: set[object]) -> str | None:
    if type(loaded) not in KINDS:
        names = ", ".join(kind.__name__ for kind in KINDS)
        return f"it is of type {type(loaded).__name__}, not one of components.registry's {names}"
    base = KINDS[type(loaded)]
    if not (isinstance(loaded.schema, type) and issubclass(loaded.schema, base)):  # type: ignore[attr-defined]
        return f"the schema of a {type(loaded).__name__} must be a subclass of {base.__module__}.{base.__name__}"
    if point.name in taken:
        return f"{point.name!r} is already a type (built in, or from another package)"
    if _tag(loaded.schema) != point.name:  # type: ignore[attr-defined]
        return f"its schema's `type` must be Literal[{point.name!r}], the entry point's name"
    fields = loaded.schema.model_fields  # type: ignore[attr-defined]
    undescribed = [name for name, info in fields.items() if not info.description]
    if undescribed:
        return f"its schema's fields {', '.join(undescribed)} have no description (recipe schema prints them)"
    return None


def _where(point: EntryPoint) -> str:
    package = point.dist.name if point.dist is not None else "an unnamed package"
    return f"{package} ({point.value})"


@cache
def installed_types() -> InstalledTypes:
    """Read once per process: a package that fails is remembered as broken, and named only to a recipe or export
    that uses its type (an unrelated broken package does not stop every command)."""
    found = InstalledTypes()
    taken = {_tag(schema) for schema in (*BUILT_IN_LOSSES, *BUILT_IN_LAYERS)}
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
        found.types[point.name] = loaded  # type: ignore[assignment]
        taken.add(point.name)
    return found


def recipe_class() -> type[Recipe]:
    """The schema recipes are validated against: `Recipe`, with the installed packages' types."""
    installed = installed_types()
    return recipe_with(installed.schemas(VectorLossType, DivergenceType), installed.schemas(BoltOnLayerType))


def installed(spec: object) -> Kind:
    """The kind behind a validated entry of a package's type (a validated recipe only holds installed types)."""
    return installed_types().types[spec.type]  # type: ignore[attr-defined]


def broken_type_hint(name: str) -> str:
    """Why a `type:` the recipe names is not available although a package declares it ('' when none does)."""
    reason = installed_types().broken.get(name)
    return f"; the installed package {reason}: fix or reinstall it" if reason else ""

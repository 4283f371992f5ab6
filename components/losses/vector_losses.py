"""Per-pair distances between student and teacher vectors; the registry maps each schema class to one (a type
from an installed package brings its own, see `components.registry`)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from components.registry import installed
from schemas.stages import CosineLoss, HuberLoss, MSELoss, TierLoss


def huber(spec: HuberLoss, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return F.huber_loss(student, teacher, reduction="none", delta=spec.delta).mean(dim=-1)


def cosine(spec: CosineLoss, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return 1.0 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-6)


def mse(spec: MSELoss, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    return (student - teacher).pow(2).mean(dim=-1)


PAIR_LOSSES: dict[type, Callable[..., torch.Tensor]] = {HuberLoss: huber, CosineLoss: cosine, MSELoss: mse}


def pair_loss_of(spec: TierLoss) -> Callable[..., torch.Tensor]:
    """The distance per pair that a recipe's loss entry names."""
    built_in = PAIR_LOSSES.get(type(spec))
    return built_in if built_in is not None else installed(spec).pair_loss  # type: ignore[union-attr]

"""Bolt-on layers other than the transformer: every module maps (hidden [B,L,in], mask [B,L]) -> [B,L,out];
they act on each token alone, so packed hidden states [1,T,in] pass through them the same way."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import Tensor, nn

from components.rms_norm import rms_norm
from schemas.bolt_on import Activation, LinearLayer, MLPLayer, ResidualMLPLayer, RMSNormLayer

_ACTIVATIONS: dict[str, type[nn.Module]] = {"gelu": nn.GELU, "silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh}


def activation(name: Activation) -> nn.Module:
    return _ACTIVATIONS[name]()


def _projection(in_dim: int, out_dim: int, act: Activation | None, layer_norm: bool, dropout: float) -> nn.Sequential:
    """Linear -> activation -> LayerNorm -> dropout, leaving out the parts not asked for."""
    parts: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
    if act is not None:
        parts.append(activation(act))
    if layer_norm:
        parts.append(nn.LayerNorm(out_dim))
    if dropout:
        parts.append(nn.Dropout(dropout))
    return nn.Sequential(*parts)


class LinearBlock(nn.Module):
    """One projection with optional activation, LayerNorm and dropout."""

    def __init__(self, spec: LinearLayer, in_dim: int) -> None:
        super().__init__()
        self.body = _projection(in_dim, spec.out_dim, spec.activation, spec.layer_norm, spec.dropout)

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return self.body(hidden)


class MLPBlock(nn.Module):
    """Projections through `hidden_dims` to `out_dim`; with `residual`, out = norm(mlp(x) + shortcut(x)).

    The shortcut is the identity when widths match, else a bias-free projection (no extra offset to learn).
    The output LayerNorm comes after the residual sum so the block's output is normalised either way.
    """

    def __init__(self, spec: MLPLayer, in_dim: int) -> None:
        super().__init__()
        widths = [in_dim, *spec.hidden_dims]
        self.hidden = nn.Sequential(
            *(_projection(a, b, spec.activation, spec.layer_norm, spec.dropout) for a, b in pairwise(widths))
        )
        self.out = nn.Linear(widths[-1], spec.out_dim)
        self.shortcut: nn.Module | None = None
        if spec.residual:
            self.shortcut = nn.Identity() if in_dim == spec.out_dim else nn.Linear(in_dim, spec.out_dim, bias=False)
        self.norm = nn.LayerNorm(spec.out_dim) if spec.layer_norm else nn.Identity()

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        out = self.out(self.hidden(hidden))
        if self.shortcut is not None:
            out = out + self.shortcut(hidden)
        return self.norm(out)


class ResidualMLPBlock(nn.Module):
    """x + W2(dropout(act(W1(norm(x))))): a width-preserving pre-norm refinement."""

    def __init__(self, spec: ResidualMLPLayer, in_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(in_dim) if spec.layer_norm else nn.Identity()
        self.inner = nn.Sequential(
            nn.Linear(in_dim, spec.hidden_dim),
            activation(spec.activation),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.hidden_dim, in_dim),
        )

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return hidden + self.inner(self.norm(hidden))


class RMSNorm(nn.Module):
    """T5-style RMSNorm (no mean subtraction, no bias); the fused kernel keeps float32 statistics for bf16 inputs."""

    def __init__(self, spec: RMSNormLayer, in_dim: int) -> None:
        super().__init__()
        self.eps = spec.eps
        self.init_from = spec.init_from
        self.weight = nn.Parameter(torch.ones(in_dim))

    def forward(self, hidden: Tensor, mask: Tensor) -> Tensor:
        return rms_norm(hidden, self.weight, self.eps, hidden.dtype)

    @torch.no_grad()
    def copy_weight(self, weight: Tensor) -> None:
        """Take over a teacher's norm weight; a width mismatch is an error, never a silent broadcast."""
        if weight.is_meta:
            raise ValueError("cannot copy a norm weight from a model on the meta device (load its weights first)")
        if tuple(weight.shape) != tuple(self.weight.shape):
            raise ValueError(f"norm weight shape {tuple(weight.shape)} does not match {tuple(self.weight.shape)}")
        self.weight.copy_(weight.to(self.weight.dtype))

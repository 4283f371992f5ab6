"""The bolt-on stack: student hidden states [B,L,in_dim] -> teacher-width vectors [B,L,out_dim]."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from components.bolt_on.layers import LinearBlock, MLPBlock, ResidualMLPBlock, RMSNorm
from components.bolt_on.transformer import TransformerBlock
from components.errors import UserFacingError
from components.packed_sequences import PackedSequences
from components.registry import installed
from schemas.bolt_on import BoltOn, BoltOnLayer, LinearLayer, MLPLayer, ResidualMLPLayer, RMSNormLayer, TransformerLayer

# Spec class -> module class: one hop from a YAML `type:` to its implementation.
_MODULES: dict[type, type[nn.Module]] = {
    LinearLayer: LinearBlock,
    MLPLayer: MLPBlock,
    TransformerLayer: TransformerBlock,
    ResidualMLPLayer: ResidualMLPBlock,
    RMSNormLayer: RMSNorm,
}


class LayerWidth(NamedTuple):
    index: int
    in_width: int
    out_width: int


class WidthProblem(NamedTuple):
    """`index` is the layer (None: the stack as a whole); `field` the key at fault, for a YAML position."""

    index: int | None
    field: str | None
    message: str


class BoltOnWidthError(UserFacingError, ValueError):
    """The layer widths do not chain from the student width to the teacher width."""


def _out_width(layer: BoltOnLayer, in_width: int) -> int:
    if isinstance(layer, (LinearLayer, MLPLayer)):
        return layer.out_dim
    if isinstance(layer, TransformerLayer):
        return layer.dim
    if type(layer) not in _MODULES:  # a package's layer says its own width
        return installed(layer).out_width(layer, in_width)  # type: ignore[union-attr]
    return in_width  # residual_mlp and rms_norm keep the width


def _module(layer: BoltOnLayer, in_width: int) -> nn.Module:
    built_in = _MODULES.get(type(layer))
    return built_in(layer, in_width) if built_in is not None else installed(layer).module(layer, in_width)  # type: ignore[union-attr]


def width_chain(spec: BoltOn, in_dim: int) -> list[LayerWidth]:
    """(layer index, incoming width, outgoing width) per layer, computed without building anything.

    A transformer passes on its `dim` even when the incoming width differs, so one mistake is reported once.
    """
    chain: list[LayerWidth] = []
    width = in_dim
    for index, layer in enumerate(spec.layers):
        out = _out_width(layer, width)
        chain.append(LayerWidth(index, width, out))
        width = out
    return chain


def width_problems(spec: BoltOn, in_dim: int, out_dim: int) -> list[WidthProblem]:
    """Every width mistake at once: transformer dim/heads, RMSNorm copied from the teacher, the final width."""
    problems: list[WidthProblem] = []
    chain = width_chain(spec, in_dim)
    for layer, (index, in_width, _) in zip(spec.layers, chain, strict=True):
        if isinstance(layer, TransformerLayer):
            if layer.dim != in_width:
                problems.append(
                    WidthProblem(index, "dim", f"transformer dim {layer.dim} must equal its incoming width {in_width}")
                )
            if layer.dim % layer.heads:
                problems.append(WidthProblem(index, "heads", f"heads {layer.heads} must divide dim {layer.dim}"))
        if isinstance(layer, RMSNormLayer) and layer.init_from is not None and in_width != out_dim:
            problems.append(
                WidthProblem(
                    index,
                    "init_from",
                    f"copying {layer.init_from} needs width {out_dim} (the teacher width); this layer has {in_width}",
                )
            )
    final = chain[-1].out_width if chain else in_dim
    if final != out_dim:
        where = f"the last layer outputs {final}" if chain else f"with no layers the student width {in_dim} passes"
        problems.append(WidthProblem(None, None, f"{where}; the stack must end at the teacher width {out_dim}"))
    return problems


class BoltOnStack(nn.Module):
    """Layers in order, plus an optional scaled linear skip from the stack input added to its output."""

    def __init__(self, spec: BoltOn, in_dim: int, out_dim: int) -> None:
        super().__init__()
        problems = width_problems(spec, in_dim, out_dim)
        if problems:
            raise BoltOnWidthError("; ".join(_describe(problem) for problem in problems))
        chain = width_chain(spec, in_dim)
        self.in_dim = in_dim
        self.out_dim = out_dim
        self.layers = nn.ModuleList(_module(layer, w.in_width) for layer, w in zip(spec.layers, chain, strict=True))
        self.skip = nn.Linear(in_dim, out_dim) if spec.skip is not None else None
        self.skip_scale = spec.skip.scale if spec.skip is not None else 0.0

    def forward(self, hidden: Tensor, mask: Tensor | PackedSequences) -> Tensor:
        """hidden [B,L,in_dim], mask bool [B,L] with True = real token -> [B,L,out_dim]; or packed hidden
        [1,T,in_dim] with its PackedSequences in the mask's place -> [1,T,out_dim]."""
        if isinstance(mask, Tensor) and mask.dtype != torch.bool:
            raise TypeError(f"mask must be bool (True = real token), got {mask.dtype}; a float mask is not a mask")
        out = hidden
        for layer in self.layers:
            out = layer(out, mask)
        if self.skip is not None:
            out = out + self.skip_scale * self.skip(hidden)
        return out

    def compile_units(self) -> list[nn.Module]:
        """What torch.compile takes as one graph each (see components.models.compilation): every layer whole."""
        return list(self.layers)

    @property
    def takes_teacher_norm(self) -> bool:
        """Whether a layer starts from the teacher's final-norm weight (`init_from: teacher.final_norm`)."""
        return any(isinstance(layer, RMSNorm) and layer.init_from == "teacher.final_norm" for layer in self.layers)

    def init_from_teacher(self, teacher: nn.Module) -> int:
        """Copy the teacher's final-norm weight into every RMSNorm with `init_from`; returns how many."""
        from components.models.loading import final_norm  # transformers import only when actually needed

        return self.copy_teacher_norm(final_norm(teacher).weight) if self.takes_teacher_norm else 0

    def copy_teacher_norm(self, weight: torch.Tensor) -> int:
        """Copy `weight` (the teacher's final-norm weight) into every RMSNorm with `init_from`; returns how many."""
        copied = 0
        for layer in self.layers:
            if isinstance(layer, RMSNorm) and layer.init_from == "teacher.final_norm":
                layer.copy_weight(weight)
                copied += 1
        return copied


def packing_problem(spec: BoltOn) -> str | None:
    """Why this stack cannot run packed (None when it can)."""
    for index, layer in enumerate(spec.layers):
        if isinstance(layer, TransformerLayer) and layer.dropout:
            return f"bolt_on.layers[{index}] has attention dropout ({layer.dropout}), which the packed kernel lacks"
        if type(layer) not in _MODULES and not installed(layer).packs:  # type: ignore[union-attr]
            return f"bolt_on.layers[{index}] ({layer.type}, from a package) does not take packed batches"
    return None


def _describe(problem: WidthProblem) -> str:
    where = "bolt_on" if problem.index is None else f"bolt_on.layers[{problem.index}]"
    return f"{where}{'.' + problem.field if problem.field else ''}: {problem.message}"


def build_bolt_on(spec: BoltOn, in_dim: int, out_dim: int) -> BoltOnStack:
    """The stack for `spec` from student width `in_dim` to teacher width `out_dim` (raises BoltOnWidthError)."""
    return BoltOnStack(spec, in_dim, out_dim)

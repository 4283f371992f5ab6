"""Bolt-on layers: the trainable stack that maps student width to teacher width."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from schemas.base import StrictModel

Activation = Literal["gelu", "silu", "relu", "tanh"]


class BoltOnLayerSpec(StrictModel):
    """What every bolt-on layer is (the base of a layer type that a package adds, see `components.registry`)."""


class LinearLayer(BoltOnLayerSpec):
    """One projection, optionally followed by activation, LayerNorm and dropout."""

    type: Literal["linear"] = Field(description="Layer kind.")
    out_dim: int = Field(gt=0, description="Output width.")
    activation: Activation | None = Field(default=None, description="Activation after the projection.")
    layer_norm: bool = Field(default=False, description="LayerNorm after the activation.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout probability.")


class MLPLayer(BoltOnLayerSpec):
    """A stack of projections through hidden widths."""

    type: Literal["mlp"] = Field(description="Layer kind.")
    hidden_dims: list[Annotated[int, Field(gt=0)]] = Field(min_length=1, description="Widths of hidden layers.")
    out_dim: int = Field(gt=0, description="Output width.")
    activation: Activation = Field(default="gelu", description="Activation between projections.")
    layer_norm: bool = Field(default=False, description="LayerNorm after each hidden projection and the output.")
    residual: bool = Field(
        default=False,
        description="Add the input to the output; when widths differ the input passes a bias-free projection.",
    )
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout probability after each hidden layer.")


class TransformerLayer(BoltOnLayerSpec):
    """Bidirectional transformer encoder blocks; width-preserving, padding masked out of attention."""

    type: Literal["transformer"] = Field(description="Layer kind.")
    layers: int = Field(gt=0, description="Number of encoder blocks.")
    dim: int = Field(gt=0, description="Model width; must equal the incoming width.")
    heads: int = Field(gt=0, description="Attention heads; must divide `dim`.")
    ffn_dim: int = Field(gt=0, description="Feed-forward inner width.")
    norm: Literal["pre", "post", "pre_post"] = Field(
        default="pre_post", description="LayerNorm placement: before sublayers, after them, or both."
    )
    activation: Activation = Field(default="gelu", description="Feed-forward activation.")
    positions: Literal["sinusoidal", "none"] = Field(
        default="sinusoidal", description="Positional encoding added before the first block."
    )
    max_positions: int = Field(default=512, gt=0, description="Longest sequence the positional table covers.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout inside the blocks.")


class ResidualMLPLayer(BoltOnLayerSpec):
    """x + MLP(x): a width-preserving refinement block."""

    type: Literal["residual_mlp"] = Field(description="Layer kind.")
    hidden_dim: int = Field(gt=0, description="Inner width.")
    activation: Activation = Field(default="gelu", description="Inner activation.")
    layer_norm: bool = Field(default=True, description="LayerNorm on the block input.")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="Dropout on the inner activation.")


class RMSNormLayer(BoltOnLayerSpec):
    """Final RMSNorm; copying the teacher's final-norm weight starts outputs on the teacher's scale."""

    type: Literal["rms_norm"] = Field(description="Layer kind.")
    eps: float = Field(default=1e-6, gt=0, description="Numerical epsilon.")
    init_from: Literal["teacher.final_norm"] | None = Field(
        default=None, description="Copy the weight from this teacher module (widths must match)."
    )


BoltOnLayer = Annotated[
    Union[LinearLayer, MLPLayer, TransformerLayer, ResidualMLPLayer, RMSNormLayer],
    Field(discriminator="type"),
]


class SkipPath(StrictModel):
    """A linear shortcut from the student output straight to teacher width, scaled and added."""

    scale: float = Field(default=0.1, description="Multiplier on the shortcut before it is added.")


class BoltOn(StrictModel):
    """The layer stack applied to the student's hidden states."""

    layers: list[BoltOnLayer] = Field(default_factory=list, description="Layers applied in order.")
    skip: SkipPath | None = Field(default=None, description="Optional scaled linear skip path.")

    @property
    def present(self) -> bool:
        """Whether there is anything to train: a stage may name `bolt_on` in `trainable` only then."""
        return bool(self.layers) or self.skip is not None

"""Bidirectional transformer encoder blocks for the bolt-on stack, with padding kept out of attention.

Mask convention: `mask` is a bool tensor [B, L], True = real token. It is passed to
`F.scaled_dot_product_attention` as a boolean `attn_mask`, where True means "may attend" (the opposite of
`nn.TransformerEncoder`'s `src_key_padding_mask`, where True means ignore). A float mask would be read as
an additive bias and leave padding visible, so the mask stays boolean. Packed hidden states [1, T, dim] come
with their `PackedSequences` in the mask's place, and attention stays within each sequence through its offsets.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from components.bolt_on.layers import activation
from components.packed_sequences import PackedSequences, packed_attention
from schemas.bolt_on import TransformerLayer


def sinusoidal_table(positions: int, dim: int) -> Tensor:
    """The fixed sin/cos table of Vaswani et al.; [positions, dim]."""
    position = torch.arange(positions, dtype=torch.float32).unsqueeze(1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(positions, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class SelfAttention(nn.Module):
    """Multi-head self-attention through SDPA (flash / memory-efficient kernels where available)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"transformer heads ({heads}) must divide dim ({dim})")
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, hidden: Tensor, mask: Tensor | PackedSequences) -> Tensor:
        batch, length, dim = hidden.shape
        if isinstance(mask, PackedSequences):
            if self.training and self.dropout:
                raise RuntimeError("packed attention has no attention dropout; packing should have been refused")
            q, k, v = self.qkv(hidden[0]).view(length, 3, self.heads, dim // self.heads).unbind(1)
            return self.out(packed_attention(q, k, v, mask, causal=False).reshape(1, length, dim))
        q, k, v = self.qkv(hidden).view(batch, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        # A row with no real token would attend to nothing (NaN); let such rows see every position instead.
        keys = mask | ~mask.any(dim=1, keepdim=True)
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keys[:, None, None, :], dropout_p=self.dropout if self.training else 0.0
        )
        return self.out(attended.transpose(1, 2).reshape(batch, length, dim))


class EncoderBlock(nn.Module):
    """Attention and feed-forward sublayers, each residual, with LayerNorm before (`pre`), after the residual
    sum (`post`), or both (`pre_post`: x = norm_after(x + f(norm_before(x))))."""

    def __init__(self, spec: TransformerLayer) -> None:
        super().__init__()
        before = spec.norm in ("pre", "pre_post")
        after = spec.norm in ("post", "pre_post")
        self.attention = SelfAttention(spec.dim, spec.heads, spec.dropout)
        self.feed_forward = nn.Sequential(
            nn.Linear(spec.dim, spec.ffn_dim),
            activation(spec.activation),
            nn.Dropout(spec.dropout),
            nn.Linear(spec.ffn_dim, spec.dim),
        )
        self.drop = nn.Dropout(spec.dropout)
        self.norms = nn.ModuleList(
            nn.LayerNorm(spec.dim) if wanted else nn.Identity() for wanted in (before, after, before, after)
        )

    def forward(self, hidden: Tensor, mask: Tensor | PackedSequences) -> Tensor:
        attn_before, attn_after, ffn_before, ffn_after = self.norms
        hidden = attn_after(hidden + self.drop(self.attention(attn_before(hidden), mask)))
        return ffn_after(hidden + self.drop(self.feed_forward(ffn_before(hidden))))


class TransformerBlock(nn.Module):
    """`layers` encoder blocks at width `dim`, with fixed sinusoidal positions added first."""

    def __init__(self, spec: TransformerLayer, in_dim: int) -> None:
        super().__init__()
        if in_dim != spec.dim:
            raise ValueError(f"transformer dim {spec.dim} must equal its incoming width {in_dim}")
        self.max_positions = spec.max_positions
        table = sinusoidal_table(spec.max_positions, spec.dim) if spec.positions == "sinusoidal" else None
        self.register_buffer("positions", table, persistent=False)
        self.blocks = nn.ModuleList(EncoderBlock(spec) for _ in range(spec.layers))

    def forward(self, hidden: Tensor, mask: Tensor | PackedSequences) -> Tensor:
        if self.positions is not None:
            packed = isinstance(mask, PackedSequences)
            length = mask.max_length if packed else hidden.shape[1]
            if length > self.max_positions:
                raise ValueError(f"sequence of {length} tokens is longer than max_positions {self.max_positions}")
            table = self.positions[mask.positions] if packed else self.positions[:length]
            hidden = hidden + table.to(hidden.dtype)
        for block in self.blocks:
            hidden = block(hidden, mask)
        return hidden

"""Padding-free batches: the real tokens of a padded batch laid end to end in one row, and attention over them.

Length-bucketed batches of image prompts are still 6-10% padding, and a padding mask keeps SDPA off its flash
kernel: on an H100 the 28-layer student spent 130-167 ms per 16k-token step with a mask against 119-122 ms
without one. Packed, every matrix product sees real tokens only and attention runs flash-attention's
variable-length kernel (`torch.nn.attention.varlen`), which keeps the sequences apart through their offsets
instead of a mask.

Each token keeps the position it has in its padded row, so a packed forward computes what the padded one does.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class PackedSequences(NamedTuple):
    """Where the real tokens of a [B, L] batch go once packed into one row of T tokens (a named tuple, so that
    compiled blocks take it as plain tensors and ints)."""

    token_index: Tensor  # [T] int64: each real token's place in the flattened [B * L] batch, row by row
    positions: Tensor  # [T] int64: its column in the padded row (the position a padded forward gives it)
    cu_seqlens: Tensor  # [B + 1] int32: where each sequence starts in the packed row, then the total T
    batch: int  # B
    max_length: int  # L, the longest sequence's bound (flash-attention's max_seqlen)

    @classmethod
    def from_mask(cls, mask: Tensor) -> PackedSequences:
        """From a bool [B, L] mask (True = real token). Computed on the host by the collator, so that the GPU
        step needs no synchronisation to learn how many tokens there are."""
        if mask.dtype != torch.bool or mask.dim() != 2:
            raise TypeError(f"mask must be a bool [B, L] tensor, got {mask.dtype} of shape {tuple(mask.shape)}")
        batch, length = mask.shape
        index = mask.reshape(-1).nonzero().squeeze(1)
        cu_seqlens = torch.zeros(batch + 1, dtype=torch.int32, device=mask.device)
        cu_seqlens[1:] = mask.sum(dim=1).cumsum(0)
        return cls(index, index % max(length, 1), cu_seqlens, batch, length)

    @property
    def tokens(self) -> int:
        return self.token_index.numel()

    def pack(self, padded: Tensor) -> Tensor:
        """[B, L, ...] -> [T, ...]: the real tokens only."""
        return padded.flatten(0, 1).index_select(0, self.token_index)

    def unpack(self, packed: Tensor) -> Tensor:
        """[T, ...] -> [B, L, ...] with zeros at the padding (differentiable)."""
        shape = (self.batch * self.max_length, *packed.shape[1:])
        padded = packed.new_zeros(shape).index_copy(0, self.token_index, packed)
        return padded.view(self.batch, self.max_length, *packed.shape[1:])

    def _map(self, move) -> PackedSequences:
        return PackedSequences(*(move(value) if isinstance(value, Tensor) else value for value in self))

    def to(self, device: torch.device | str, non_blocking: bool = False) -> PackedSequences:
        return self._map(lambda value: value.to(device, non_blocking=non_blocking))

    def pin_memory(self) -> PackedSequences:
        return self._map(lambda value: value.pin_memory())


def _load_varlen():
    """torch's flash-attention varlen function and the keywords this torch version takes; None without one.
    Looked up once at import: a lookup inside a compiled block would break its graph."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    return varlen_attn, frozenset(inspect.signature(varlen_attn).parameters)


_VARLEN = _load_varlen()
FLASH_MAX_HEAD_DIM = 256


def torch_has_varlen() -> bool:
    """Whether this torch ships the variable-length flash kernel (whatever the device)."""
    return _VARLEN is not None


def varlen_available(device: torch.device | str) -> bool:
    """Whether packed attention runs on a flash kernel here (CUDA and a torch that has `varlen_attn`)."""
    return torch.device(device).type == "cuda" and _VARLEN is not None


def flash_head_dim_problem(head_dim: int) -> str | None:
    """Why flash attention cannot take heads of this width (None when it can)."""
    if head_dim % 8 or head_dim > FLASH_MAX_HEAD_DIM:
        return f"head width {head_dim} (flash attention needs a multiple of 8, at most {FLASH_MAX_HEAD_DIM})"
    return None


def packed_attention(
    query: Tensor, key: Tensor, value: Tensor, packed: PackedSequences, causal: bool, scale: float | None = None
) -> Tensor:
    """Attention of [T, H, D] query, key and value within each packed sequence (grouped-query keys allowed);
    returns [T, H, D]. CUDA in bf16/fp16 runs flash-attention varlen; elsewhere a block-diagonal SDPA mask does
    the same sums in O(T^2) memory, as a reference for tests and small CPU runs."""
    groups = query.shape[1] // key.shape[1]
    flash_dtype = query.dtype in (torch.float16, torch.bfloat16)
    if query.is_cuda and _VARLEN is not None and flash_dtype and flash_head_dim_problem(query.shape[-1]) is None:
        varlen_attn, keywords = _VARLEN
        if "window_size" in keywords:  # torch 2.11 and 2.13 (checked) say causal as a window
            options = {"window_size": (-1, 0) if causal else (-1, -1)}
        else:
            options = {"is_causal": causal}
        if groups > 1 and "enable_gqa" in keywords:
            options["enable_gqa"] = True
        elif groups > 1:
            key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
        cu = packed.cu_seqlens
        return varlen_attn(query, key, value, cu, cu, packed.max_length, packed.max_length, scale=scale, **options)
    counts = (packed.cu_seqlens[1:] - packed.cu_seqlens[:-1]).long()
    segments = torch.repeat_interleave(torch.arange(packed.batch, device=counts.device), counts)
    allowed = segments[:, None] == segments[None, :]
    if causal:
        allowed = allowed & torch.ones_like(allowed).tril()
    out = F.scaled_dot_product_attention(
        query.transpose(0, 1),
        key.transpose(0, 1),
        value.transpose(0, 1),
        attn_mask=allowed,
        scale=scale,
        enable_gqa=groups > 1,
    )
    return out.transpose(0, 1)

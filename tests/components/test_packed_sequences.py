"""Packed layout and attention: the same sums as the padded batch, sequences kept apart."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from components.packed_sequences import PackedSequences, packed_attention, varlen_available

DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _mask(lengths: list[int], width: int) -> torch.Tensor:
    return torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]


def test_from_mask_lays_sequences_end_to_end_with_their_padded_positions():
    packed = PackedSequences.from_mask(_mask([3, 0, 5, 1], 5))
    assert packed.cu_seqlens.tolist() == [0, 3, 3, 8, 9]
    assert packed.positions.tolist() == [0, 1, 2, 0, 1, 2, 3, 4, 0]
    assert packed.token_index.tolist() == [0, 1, 2, 10, 11, 12, 13, 14, 15]
    assert (packed.batch, packed.max_length, packed.tokens) == (4, 5, 9)


def test_a_left_padded_row_keeps_the_columns_a_padded_forward_would_use():
    mask = torch.tensor([[False, False, True, True]])
    assert PackedSequences.from_mask(mask).positions.tolist() == [2, 3]


def test_pack_then_unpack_restores_real_tokens_and_zeros_the_padding():
    mask = _mask([2, 4, 1], 4)
    values = torch.randn(3, 4, 6)
    packed = PackedSequences.from_mask(mask)
    back = packed.unpack(packed.pack(values))
    assert torch.equal(back[mask], values[mask])
    assert not back[~mask].any()


def test_unpack_passes_gradients_to_the_real_tokens_only():
    packed = PackedSequences.from_mask(_mask([2, 3], 3))
    flat = torch.randn(5, 4, requires_grad=True)
    packed.unpack(flat).sum().backward()
    assert torch.equal(flat.grad, torch.ones(5, 4))


def test_a_float_mask_is_refused():
    with pytest.raises(TypeError, match="bool"):
        PackedSequences.from_mask(torch.ones(2, 3))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal", [True, False])
def test_packed_attention_equals_attention_of_each_sequence_alone(device, causal):
    """Grouped-query keys (4 query heads on 2 key heads) and an empty sequence included."""
    torch.manual_seed(0)
    lengths = [5, 0, 9, 1, 7]
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    packed = PackedSequences.from_mask(_mask(lengths, max(lengths))).to(device)
    total = sum(lengths)
    query = torch.randn(total, 4, 16, device=device, dtype=dtype)
    key, value = (torch.randn(total, 2, 16, device=device, dtype=dtype) for _ in range(2))
    out = packed_attention(query, key, value, packed, causal, scale=0.3)
    start = 0
    for n in lengths:
        q, k, v = (t[start : start + n].transpose(0, 1).float() for t in (query, key, value))
        if n:
            ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=0.3, enable_gqa=True)
            got = out[start : start + n].transpose(0, 1).float()
            assert torch.allclose(got, ref, atol=2e-2 if dtype == torch.bfloat16 else 1e-5)
        start += n


def test_the_flash_kernel_is_only_claimed_on_cuda():
    assert not varlen_available("cpu")

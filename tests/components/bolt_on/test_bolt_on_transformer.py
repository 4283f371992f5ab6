"""The bolt-on transformer masks padding keys: padded positions cannot change real-token outputs."""

from __future__ import annotations

import pytest
import torch

from components.bolt_on.transformer import TransformerBlock, sinusoidal_table
from schemas.bolt_on import TransformerLayer


def block(norm: str = "pre_post", positions: str = "sinusoidal") -> TransformerBlock:
    torch.manual_seed(0)
    spec = TransformerLayer(
        type="transformer", layers=2, dim=16, heads=4, ffn_dim=32, norm=norm, positions=positions, max_positions=12
    )
    return TransformerBlock(spec, 16).eval()


def padded_batch() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    hidden = torch.randn(2, 7, 16)
    mask = torch.tensor([[True] * 7, [True] * 4 + [False] * 3])
    return hidden, mask


@pytest.mark.parametrize("norm", ["pre", "post", "pre_post"])
def test_padding_does_not_reach_real_tokens(norm: str) -> None:
    layer = block(norm)
    hidden, mask = padded_batch()
    noisy = hidden.clone()
    noisy[1, 4:] = torch.randn(3, 16) * 100
    with torch.no_grad():
        clean_out, noisy_out = layer(hidden, mask), layer(noisy, mask)
        alone = layer(hidden[1:, :4], mask[1:, :4])  # the same prompt with no padding at all
    torch.testing.assert_close(clean_out[1, :4], noisy_out[1, :4])
    torch.testing.assert_close(clean_out[1, :4], alone[0])
    torch.testing.assert_close(clean_out[0], noisy_out[0])


def test_an_inverted_mask_would_let_padding_in() -> None:
    """The same check with `~mask` (nn.TransformerEncoder's convention) fails: the convention matters."""
    layer = block()
    hidden, mask = padded_batch()
    noisy = hidden.clone()
    noisy[1, 4:] = torch.randn(3, 16) * 100
    with torch.no_grad():
        difference = (layer(hidden, ~mask)[1, :4] - layer(noisy, ~mask)[1, :4]).abs().max()
    assert difference > 1e-2


def test_a_row_without_real_tokens_stays_finite() -> None:
    hidden, _ = padded_batch()
    with torch.no_grad():
        out = block()(hidden, torch.zeros(2, 7, dtype=torch.bool))
    assert torch.isfinite(out).all()


def test_norm_placement_sets_the_layer_norm_count() -> None:
    def norms(layer: TransformerBlock) -> int:
        return sum(isinstance(m, torch.nn.LayerNorm) for m in layer.modules())

    assert (norms(block("pre")), norms(block("post")), norms(block("pre_post"))) == (4, 4, 8)


def test_sinusoidal_positions() -> None:
    table = sinusoidal_table(12, 16)
    assert table.shape == (12, 16)
    torch.testing.assert_close(table[0], torch.tensor([0.0, 1.0] * 8))
    assert block(positions="none").positions is None
    with pytest.raises(ValueError, match="max_positions 12"):
        block()(torch.zeros(1, 13, 16), torch.ones(1, 13, dtype=torch.bool))


def test_positions_make_order_matter() -> None:
    hidden, _ = padded_batch()
    mask = torch.ones(1, 7, dtype=torch.bool)
    reversed_hidden = hidden[:1].flip(1)
    with torch.no_grad():
        with_positions = block()(reversed_hidden, mask).flip(1) - block()(hidden[:1], mask)
        without = block(positions="none")(reversed_hidden, mask).flip(1) - block(positions="none")(hidden[:1], mask)
    assert with_positions.abs().max() > 1e-3
    assert without.abs().max() < 1e-4  # attention without positions is permutation-equivariant

"""The per-prompt check that cached rows hold no NaN or inf (bytes changed in place pass every other check)."""

from __future__ import annotations

import pytest
import torch

from components.cache.reader import _all_finite


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_one_bad_value_anywhere_is_found(dtype, bad) -> None:
    rows = torch.randn(7, 64).to(dtype)
    assert _all_finite(rows)
    for where in [(0, 0), (3, 17), (6, 63)]:
        broken = rows.clone()
        broken[where] = bad
        assert not _all_finite(broken), (dtype, bad, where)


def test_the_largest_finite_values_and_no_rows_pass() -> None:
    assert _all_finite(torch.full((2, 8), torch.finfo(torch.bfloat16).max, dtype=torch.bfloat16))
    assert _all_finite(torch.full((2, 8), torch.finfo(torch.bfloat16).min, dtype=torch.bfloat16))
    assert _all_finite(torch.empty(0, 8, dtype=torch.bfloat16))

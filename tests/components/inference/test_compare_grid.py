"""The comparison image shows every panel, unchanged, under its label."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from components.inference import compare_grid


def test_both_panels_side_by_side_with_labels():
    red, blue = Image.new("RGB", (64, 64), "red"), Image.new("RGB", (64, 64), "blue")
    grid = np.asarray(compare_grid({"t5 (teacher)": red, "qwen (distilled)": blue}, label_height=24))

    assert grid.shape[0] == 24 + 64
    rows = grid[24:]
    is_red = (rows == [255, 0, 0]).all(axis=-1)
    is_blue = (rows == [0, 0, 255]).all(axis=-1)
    assert is_red.sum() == 64 * 64 and is_blue.sum() == 64 * 64
    red_columns, blue_columns = np.nonzero(is_red.any(axis=0))[0], np.nonzero(is_blue.any(axis=0))[0]
    assert red_columns.max() < blue_columns.min(), "teacher panel left of the distilled one"
    band = grid[:24]
    for columns in (red_columns, blue_columns):
        assert (band[:, columns.min() : columns.max() + 1] < 128).any(), "a dark label above each panel"


def test_labels_wider_than_the_panel_are_not_cut():
    grid = compare_grid({"a rather long label for a tiny image": Image.new("RGB", (16, 16), "red")})
    assert grid.width > 16


def test_large_images_get_a_taller_label_band():
    grid = compare_grid({"a": Image.new("RGB", (1024, 1024)), "b": Image.new("RGB", (1024, 1024))})
    assert grid.height > 1024 + 24


def test_no_images_is_an_error():
    with pytest.raises(ValueError, match="at least one image"):
        compare_grid({})

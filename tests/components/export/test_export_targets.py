"""Where an export may go: an earlier export of the same kind and recipe, never the other kind's."""

from __future__ import annotations

import re

import pytest

from components.atomic_files import ForeignDirectoryError
from components.export import check_target


@pytest.mark.parametrize(
    ("family", "present", "said"),
    [
        (
            "logits",
            "encoder.json",
            "holds the export of an image encoder (encoder.json), and this recipe exports a causal",
        ),
        ("embedding", "distilled.json", "holds the export of a causal LM (distilled.json), and this recipe exports an"),
    ],
)
def test_an_export_of_the_other_kind_is_named_as_such(tmp_path, family, present, said):
    """It was called 'a directory but not a previous export', which it is."""
    (tmp_path / present).write_text('{"recipe": "r"}')
    with pytest.raises(ForeignDirectoryError, match=re.escape(said)):
        check_target(tmp_path, family, "r")


def test_an_empty_folder_or_an_earlier_export_of_the_recipe_may_be_written(tmp_path):
    check_target(tmp_path, "logits", "r")
    (tmp_path / "distilled.json").write_text('{"recipe": "r"}')
    check_target(tmp_path, "logits", "r")

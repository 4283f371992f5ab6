"""Prompt-file settings that could not take effect are refused rather than ignored."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.data import DataFile


def test_field_is_for_jsonl_only() -> None:
    assert DataFile.model_validate({"path": "p.jsonl", "field": "caption"}).field == "caption"
    assert DataFile.model_validate("p.txt").field == "text"
    with pytest.raises(ValidationError, match="remove `field`"):
        DataFile.model_validate({"path": "p.txt", "field": "caption"})

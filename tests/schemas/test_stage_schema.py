"""A stage names each trainable part once: a repeated part would read as two optimizer groups of one weight."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from schemas.stages import Stage

LOSS = [{"type": "huber", "on": "matched"}]


def test_a_part_named_twice_is_refused_with_its_name() -> None:
    with pytest.raises(ValidationError, match="student is named more than once: name each part once"):
        Stage.model_validate({"name": "a", "steps": 2, "trainable": ["student", "student"], "lr": {"student": 1e-4},
                              "losses": LOSS})  # fmt: skip
    stage = Stage.model_validate(
        {"name": "a", "steps": 2, "trainable": ["student", "bolt_on"], "lr": {"student": 1e-4, "bolt_on": 1e-3},
         "losses": LOSS}
    )  # fmt: skip
    assert stage.trainable == ["student", "bolt_on"]

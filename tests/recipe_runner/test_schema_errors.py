"""Schema messages that show how a value was read and what was likely meant."""

from __future__ import annotations

from pathlib import Path

import pytest

from recipe_runner.errors import RecipeError
from recipe_runner.loader import load_recipe

BASE = Path(__file__).resolve().parents[1] / "assets" / "broken" / "base.yaml"


@pytest.mark.parametrize(
    ("override", "said"),
    [
        (
            "stages.0.lr=1.0e-3",
            "expected a mapping, got 0.001: a mapping of bolt_on, student, e.g. lr: {bolt_on: 0.001}",
        ),
        (  # the example names a part the stage trains
            "stages.0={name: s, steps: 3, trainable: [student], lr: 1.0e-3, losses: [{type: huber, on: matched}]}",
            "expected a mapping, got 0.001: a mapping of bolt_on, student, e.g. lr: {student: 0.001}",
        ),
        ("stages.0.schedule=cosine", "expected a mapping, got 'cosine': write schedule: {type: cosine}"),
        ("hardware=4", "expected a mapping, got 4 (hardware: Precision, batch shape and backend.)"),  # no example
        (  # the example is the field the mapping cannot do without
            "data=foo.txt",
            "expected a mapping, got 'foo.txt': a mapping of eval, eval_fraction, shuffle, train, e.g. data: "
            "{train: 'foo.txt'}",
        ),
        ("stages.0.trainable=student", "expected a list, got 'student': write trainable: [student]"),
        (  # a list where a mapping belongs: what the mapping maps, in the field's description
            "hardware=[1]",
            "expected a mapping, got [1] (hardware: Precision, batch shape and backend.)",
        ),
        (  # `~` meant as the home folder
            "output.dir=~",
            "expected a string, got null (`~` alone, and a key with nothing after it, are YAML's null: write the "
            "text out, e.g. a full path)",
        ),
        (  # read as 8 before, where an editor's JSON schema flags it
            "hardware.batch_size='8'",
            "expected an integer, got '8' (quoted, so YAML reads it as text: write it without quotes)",
        ),
        (
            "stages.0.lr.student='2e-4'",
            "expected a number, got '2e-4' (quoted, so YAML reads it as text: write it without quotes)",
        ),
        (  # a --set one level too deep
            "hardware.seed.x=1",
            "expected an integer, got {'x': 1}: seed is one value, not a section holding x",
        ),
    ],
)
def test_a_value_of_the_wrong_shape_says_how_it_was_read_and_what_was_meant(override: str, said: str) -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(BASE, [override], check=False)
    [problem] = caught.value.problems
    assert problem.message == said


def test_a_key_of_another_type_of_the_entry_names_the_type_it_belongs_to() -> None:
    """`type:` changed and the old type's keys left behind: they are not typos to correct."""
    with pytest.raises(RecipeError) as caught:
        load_recipe(BASE, ["stages.0.losses.0.type=cosine", "stages.0.losses.0.delta=1"], check=False)
    [problem] = caught.value.problems
    assert problem.message == (
        "unknown key 'delta' (allowed: on, type, weight); delta belongs to type huber, not cosine: remove it, or "
        "set the type it belongs to"
    )


def test_a_key_written_one_level_too_deep_is_told_where_it_belongs() -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(BASE, ["stages.0.schedule={type: cosine, warmup_steps: 5}"], check=False)
    [problem] = caught.value.problems
    assert problem.message == (
        "unknown key 'warmup_steps' (allowed: type); warmup_steps is a key of stages[0]: move it out of "
        "stages[0].schedule"
    )


@pytest.mark.parametrize("key", ["true", "1.0"])
def test_a_layer_index_that_is_a_yes_no_or_a_decimal_is_refused_not_read_as_1(key: str) -> None:
    features = Path(__file__).resolve().parents[2] / "recipes" / "examples" / "qwen_features_tiny.yaml"
    with pytest.raises(RecipeError) as caught:
        load_recipe(features, [f"stages.0.losses.1.layers={{{key}: 2}}"], check=False)
    [problem] = caught.value.problems
    assert problem.message == f"layer indices are whole numbers, got {key} in {{{key}: 2}}: write e.g. {{1: 3}}"

"""The DSL documents itself: every field has a description, every section forbids unknown keys."""

from __future__ import annotations

import json
import typing
from typing import Any

import pytest
from click.testing import CliRunner
from pydantic import BaseModel

from recipe_runner.cli import main
from schemas import Recipe


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """pydantic models inside a field annotation (through Annotated, Optional, Union, list, tuple, dict)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _models_in(args[0])
    if origin is not None:  # Union, Optional, list, tuple, dict (Literal has no models among its args)
        return [model for arg in args if arg is not Ellipsis for model in _models_in(arg)]
    return []


def reachable_models() -> list[type[BaseModel]]:
    seen: list[type[BaseModel]] = []
    todo: list[type[BaseModel]] = [Recipe]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for field in model.model_fields.values():
            todo += _models_in(field.annotation)
    return seen


MODELS = reachable_models()
FIELDS = [(model, name) for model in MODELS for name in model.model_fields]


def test_walk_finds_every_section() -> None:
    names = {model.__name__ for model in MODELS}
    expected = {
        "Recipe",
        "T5EncoderTeacher",
        "HiddenStatesStudent",
        "TeacherCache",
        "BoltOn",
        "LinearLayer",
        "MLPLayer",
        "TransformerLayer",
        "ResidualMLPLayer",
        "RMSNormLayer",
        "SkipPath",
        "CrossTokenizerAlignment",
        "Data",
        "DataFile",
        "Stage",
        "PerPart",
        "LoRA",
        "AdamW",
        "ConstantSchedule",
        "CosineRestartsSchedule",
        "HuberLoss",
        "CosineLoss",
        "MSELoss",
        "Hardware",
        "Output",
        "Inference",
    }
    assert expected <= names


@pytest.mark.parametrize(("model", "name"), FIELDS, ids=[f"{m.__name__}.{n}" for m, n in FIELDS])
def test_every_field_has_a_description(model: type[BaseModel], name: str) -> None:
    description = model.model_fields[name].description
    assert description is not None and description.strip(), f"{model.__name__}.{name} has no description"


@pytest.mark.parametrize("model", MODELS, ids=[m.__name__ for m in MODELS])
def test_every_section_forbids_unknown_keys(model: type[BaseModel]) -> None:
    assert model.model_config.get("extra") == "forbid", f"{model.__name__} accepts unknown keys"


@pytest.mark.parametrize("model", MODELS, ids=[m.__name__ for m in MODELS])
def test_every_section_has_a_docstring(model: type[BaseModel]) -> None:
    assert (model.__doc__ or "").strip(), f"{model.__name__} has no docstring (it becomes the schema description)"


def test_unknown_key_is_rejected_in_every_section() -> None:
    from pydantic import ValidationError

    for model in MODELS:
        with pytest.raises(ValidationError) as exc:
            model.model_validate({"surely_not_a_key": 1})
        assert any(err["type"] == "extra_forbidden" for err in exc.value.errors()), model.__name__


def test_recipe_schema_command_prints_json_schema() -> None:
    result = CliRunner().invoke(main, ["schema"])
    assert result.exit_code == 0, result.output
    schema = json.loads(result.stdout)
    assert schema["title"] == "Recipe"
    assert schema["type"] == "object"
    assert "$defs" in schema and schema["$defs"]
    assert {"teacher", "student", "stages"} <= set(schema["properties"])
    # Required of a file without `extends`; a file that extends another may leave out what its base gives.
    assert schema["if"] == {"required": ["extends"]} and "required" not in schema
    assert set(schema["else"]["required"]) >= {"recipe", "teacher", "student", "data", "stages", "output"}
    assert schema["properties"]["extends"]["description"] and set(schema["patternProperties"]) == {"^x-"}
    for name, definition in [("Recipe", schema), *schema["$defs"].items()]:
        if definition.get("type") != "object":
            continue
        assert definition.get("additionalProperties") is False, name
        for key, prop in definition.get("properties", {}).items():
            assert prop.get("description"), f"{name}.{key} has no description in the JSON schema"


def test_json_schema_references_resolve() -> None:
    schema = json.loads(CliRunner().invoke(main, ["schema"]).stdout)
    text = json.dumps(schema)
    refs = {part.split('"')[0] for part in text.split('"$ref": "#/$defs/')[1:]}
    assert refs and refs <= set(schema["$defs"])


def test_defaults_made_by_factories_reach_the_schema_as_the_models_make_them() -> None:
    """An editor shows `default` only where the schema has one: a factory's default is written there by hand, and
    must be what the model fills in (`student_lora: {r: 4}` trains q/k/v/o adapters)."""
    from schemas.alignment import CrossTokenizerAlignment
    from schemas.stages import LoRA, Stage

    schema = json.loads(CliRunner().invoke(main, ["schema"]).stdout)["$defs"]
    stage = Stage.model_validate(
        {
            "name": "s",
            "steps": 1,
            "trainable": ["bolt_on"],
            "lr": {"bolt_on": 1e-3},
            "losses": [{"type": "huber", "on": "matched"}],
        }
    )
    shown = schema["Stage"]["properties"]
    assert shown["optimizer"]["default"] == {"type": stage.optimizer.type}
    assert shown["schedule"]["default"] == {"type": stage.schedule.type}
    assert schema["LoRA"]["properties"]["target_modules"]["default"] == LoRA().target_modules
    tiers = CrossTokenizerAlignment(type="cross_tokenizer").tiers
    assert schema["CrossTokenizerAlignment"]["properties"]["tiers"]["default"] == tiers


def test_the_schema_says_what_validate_says_of_a_stages_length_and_parts() -> None:
    """One of `epochs` and `steps`, each part once: flagged by an editor as `recipe validate` flags them."""
    stage = json.loads(CliRunner().invoke(main, ["schema"]).stdout)["$defs"]["Stage"]
    assert [branch["required"] for branch in stage["anyOf"]] == [["epochs"], ["steps"]]
    assert stage["not"]["required"] == ["epochs", "steps"]
    assert stage["properties"]["trainable"]["uniqueItems"] is True

"""The JSON Schema `recipe schema` prints for editors: the recipe model's, plus what the YAML loader takes
before the model sees the file (`extends`, top-level `x-` anchor templates).

A file that extends another may leave out every section its base gives, so the sections are required only of
a file without `extends`. Inside a section an overriding file may still write part of a mapping whose
schema has required keys (`teacher: {cache: ...}`); an editor flags those, `recipe validate` does not.
"""

from __future__ import annotations

from typing import Any

from recipe_runner.yaml_source import TEMPLATE_PREFIX

_EXTENDS = {
    "description": "Base recipe(s) this file changes, relative to this file: mappings merge deeply, lists replace, "
    "`key: null` removes an inherited value.",
    "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
}
_TEMPLATES = {"description": "Left out of the recipe: a place for YAML anchors to reuse in this file."}


def editor_schema(model_schema: dict[str, Any]) -> dict[str, Any]:
    schema = dict(model_schema)
    schema["properties"] = {"extends": _EXTENDS, **schema.get("properties", {})}
    schema["patternProperties"] = {f"^{TEMPLATE_PREFIX}": _TEMPLATES}
    required = schema.pop("required", [])
    if required:
        schema["if"] = {"required": ["extends"]}
        schema["else"] = {"required": required}
    return schema

"""Pydantic errors rewritten for people: the YAML position, the field as written, and a suggestion."""

from __future__ import annotations

import datetime
import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel, ValidationError

from components.registry import broken_type_hint
from recipe_runner.errors import Path_, Position, Problem, dotted
from recipe_runner.yaml_source import SourcedTree, value_at
from schemas.base import QuotedText


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _members(tp: Any) -> list[Any]:
    """Flatten Annotated/Optional/Union into the concrete types a value may take."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for arg in typing.get_args(tp) for m in _members(arg)]
    return [] if tp is type(None) else [tp]


def _tag_of(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return args[0] if args else None


def _walk(root: type[BaseModel], path: Path_) -> list[Any]:
    """Types that may stand at `path` of the schema (pydantic locs also carry union tags; they are skipped)."""
    candidates: list[Any] = [root]
    for part in path:
        nxt: list[Any] = []
        for tp in candidates:
            origin = typing.get_origin(tp)
            if isinstance(tp, type) and issubclass(tp, BaseModel):
                if isinstance(part, str) and part in tp.model_fields:
                    nxt += _members(tp.model_fields[part].annotation)
                elif part == _tag_of(tp):
                    nxt.append(tp)
            elif origin in (list, tuple) and isinstance(part, int):
                nxt += [m for arg in typing.get_args(tp) if arg is not Ellipsis for m in _members(arg)]
            elif origin is dict:
                nxt += _members(typing.get_args(tp)[1])
        candidates = nxt
    return candidates


def _known_keys(root: type[BaseModel], path: Path_) -> list[str]:
    return sorted(
        {name for tp in _walk(root, path) if isinstance(tp, type) for name in getattr(tp, "model_fields", {})}
    )


def _data_path(data: Any, loc: Path_) -> Path_:
    """Drop union-tag segments from a pydantic loc so it matches the YAML tree."""
    out: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and part not in node and node.get("type") == part:
            continue
        out.append(part)
        if isinstance(node, dict):
            node = node.get(part)
        elif isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
        else:
            node = None
    return tuple(out)


_SCALARS = {int: "a number", float: "a number", bool: "true or false", datetime.date: "a date",
            datetime.datetime: "a date and time"}  # fmt: skip


def _describe(value: Any) -> str:
    if value is None or isinstance(value, bool):  # as the recipe wrote it
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, datetime.date):
        return value.isoformat()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _message(err: dict[str, Any], root: type[BaseModel], path: Path_, data: Any) -> str:
    kind, ctx = err["type"], err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        known = _known_keys(root, tuple(err["loc"][:-1]))
        template = len(path) == 1 and str(path[0]).startswith(("x_", "_", "."))  # a home for YAML anchors
        hint = "; a top-level key for YAML anchors only must start with x- (it is left out)" if template else ""
        hint += _other_types_key(root, tuple(err["loc"][:-1]), str(path[-1])) or _an_outer_key(root, path)
        suggestion = "" if hint else _suggest(str(path[-1]), known)
        return f"unknown key {path[-1]!r}{suggestion} (allowed: {', '.join(known)}){hint}"
    if kind == "missing":
        return "required field is missing"
    if kind == "invalid_key":  # a number where a name belongs (`--set hardware.0=...`): not a list
        known = _known_keys(root, tuple(err["loc"][:-1]))
        names = f" (allowed: {', '.join(known)})" if known else ""
        return f"{value!r} is not a key: {dotted(path[:-1]) or 'a recipe'} is a mapping of names, not a list{names}"
    if kind == "union_tag_invalid":
        tags = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
        tag = str(ctx.get("tag"))
        return f"unknown type {tag!r}{_suggest(tag, tags)} (known: {', '.join(tags)}){broken_type_hint(tag)}"
    if kind == "union_tag_not_found":
        tags = list(
            dict.fromkeys(t for tp in _walk(root, tuple(err["loc"])) if isinstance(tp, type) and (t := _tag_of(tp)))
        )
        keys = [str(key) for key in value] if isinstance(value, dict) else []
        misspelt = difflib.get_close_matches("type", keys, n=1, cutoff=0.6)
        hint = f"; {misspelt[0]!r} looks like a misspelt 'type'" if misspelt else ""
        known = f" (known: {', '.join(tags)})" if tags else ""
        return f"needs a `type:` key naming what this entry is{known}{hint}"
    if kind == "literal_error":
        allowed = [a.strip(" '") for a in str(ctx.get("expected", "")).replace(" or ", ",").split(",")]
        return f"{_describe(value)} is not allowed{_suggest(str(value), allowed)} (allowed: {ctx.get('expected')})"
    bounds = {
        "greater_than": "must be > {gt}",
        "greater_than_equal": "must be >= {ge}",
        "less_than": "must be < {lt}",
        "less_than_equal": "must be <= {le}",
        "too_short": "needs at least {min_length} item(s)",
        "too_long": "allows at most {max_length} item(s)",
    }
    if kind in bounds:
        return bounds[kind].format(**ctx) + (
            f", got {_describe(value)}" if kind not in ("too_short", "too_long") else ""
        )
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    if kind.endswith(("_type", "_parsing")):
        wanted = kind.split("_")[0].replace("int", "an integer").replace("float", "a number")
        words = {
            "bool": "true or false",
            "string": "a string",
            "dict": "a mapping",
            "model": "a mapping",
            "list": "a list",
        }
        wanted = words.get(wanted, wanted)
        # YAML reads 2024-06-01 as a date and 1234567 as a number: a name or revision of that shape needs quotes
        read_as = _SCALARS.get(type(value)) if wanted == "a string" else None
        quote = f" (YAML reads that as {read_as}: quote it, '{_describe(value)}')" if read_as else ""
        shape = _mapping_example(root, tuple(err["loc"]), path, value, data) if wanted == "a mapping" else ""
        if wanted == "a list" and not isinstance(value, (dict, list)) and path:
            shape = f": write {path[-1]}: [{_describe(value).strip(chr(39))}]"
        elif wanted == "a mapping" and not shape:  # what the mapping maps, in the field's own words
            shape = _field_description(root, path)
        return f"expected {wanted}, got {_describe(value)}{quote}{shape}{_scalar_hint(wanted, value, path)}"
    return err["msg"][0].lower() + err["msg"][1:]


def _other_types_key(root: type[BaseModel], loc: Path_, key: str) -> str:
    """A key of another `type:` of the same entry (left behind when the type was changed): which type has it."""
    if not loc or not isinstance(loc[-1], str):
        return ""
    members = [tp for tp in _walk(root, loc[:-1]) if isinstance(tp, type) and issubclass(tp, BaseModel)]
    if loc[-1] not in {_tag_of(tp) for tp in members}:  # not inside a union on `type`
        return ""
    owners = [tag for tp in members if key in tp.model_fields and (tag := _tag_of(tp)) and tag != loc[-1]]
    if not owners:
        return ""
    kinds = f"type {owners[0]}" if len(owners) == 1 else f"types {', '.join(owners)}"
    return f"; {key} belongs to {kinds}, not {loc[-1]}: remove it, or set the type it belongs to"


def _field_description(root: type[BaseModel], path: Path_) -> str:
    if not path or not isinstance(path[-1], str):
        return ""
    for tp in _walk(root, path[:-1]):
        if isinstance(tp, type) and issubclass(tp, BaseModel) and path[-1] in tp.model_fields:
            description = tp.model_fields[path[-1]].description
            return f" ({path[-1]}: {description})" if description else ""
    return ""


def _an_outer_key(root: type[BaseModel], path: Path_) -> str:
    """A key written one level too deep (`schedule: {type: cosine, warmup_steps: 5}`): where it belongs."""
    key = path[-1]
    for depth in range(len(path) - 2, -1, -1):
        owners = [tp for tp in _walk(root, path[:depth]) if isinstance(tp, type) and issubclass(tp, BaseModel)]
        if any(key in tp.model_fields for tp in owners):
            outer = dotted(path[:depth]) if depth else "the top level of the recipe"
            return f"; {key} is a key of {outer}: move it out of {dotted(path[:-1])}"
    return ""


def _scalar_hint(wanted: str, value: Any, path: Path_) -> str:
    """A null where text belongs (`dir: ~` meaning the home folder), or keys under a single value (a `--set`
    that went one level too deep)."""
    if value is None and wanted == "a string":
        return " (`~` alone, and a key with nothing after it, are YAML's null: write the text out, e.g. a full path)"
    if isinstance(value, QuotedText):
        return " (quoted, so YAML reads it as text: write it without quotes)"
    if isinstance(value, dict) and wanted not in ("a mapping", "a list") and path:
        return f": {path[-1]} is one value, not a section holding {', '.join(map(str, value))}"
    return ""


def _mapping_example(root: type[BaseModel], loc: Path_, path: Path_, value: Any, data: Any) -> str:
    """A scalar where a mapping belongs (`schedule: cosine`, `lr: 1e-3`): the mapping it was likely meant as; a
    per-part mapping's example names a part the stage trains (a logits recipe has no bolt-on to give a rate)."""
    if isinstance(value, (dict, list)) or not path:
        return ""
    types_here = [tp for tp in _walk(root, loc) if isinstance(tp, type) and issubclass(tp, BaseModel)]
    tags = [tag for tp in types_here if (tag := _tag_of(tp))]
    name, shown = path[-1], _describe(value)
    if tags and isinstance(value, str) and value in tags:
        return f": write {name}: {{type: {value}}}"
    if tags:
        return f": a mapping with `type:` ({', '.join(tags)})"
    keys = sorted({key for tp in types_here for key in tp.model_fields})
    if not keys or len(keys) > 4:  # a section of many settings: an example of one would mislead
        return ""
    siblings = value_at(data, path[:-1])
    trained = siblings.get("trainable") if isinstance(siblings, dict) else None
    required = [key for tp in types_here for key, field in tp.model_fields.items() if field.is_required()]
    # A part the stage trains, else the field the mapping cannot do without (`data: x.txt` means its train file).
    example = next((key for key in keys if isinstance(trained, list) and key in trained), (required or keys)[0])
    return f": a mapping of {', '.join(keys)}, e.g. {name}: {{{example}: {shown}}}"


def _family_hint(data: Any, loc: Path_, err: dict[str, Any]) -> str:
    """A tier loss (`on:` missing) in a recipe whose teacher is a causal LM: the loss, not the tier, is wrong."""
    teacher = data.get("teacher") if isinstance(data, dict) else None
    causal = isinstance(teacher, dict) and teacher.get("type") == "causal_lm"
    tier_loss = len(loc) == 5 and loc[0] == "stages" and loc[2] == "losses" and loc[4] == "on"
    if err["type"] != "missing" or not causal or not tier_loss:
        return ""
    return (
        " (an alignment tier: this loss compares aligned hidden states of a t5_encoder teacher; a causal_lm "
        "teacher takes forward_kl, reverse_kl, jsd, cross_entropy, hidden_states, attention or uld)"
    )


def with_overrides(overrides: list[Position]) -> str:
    """` (with --set #1 (KEY=VALUE))`: the command-line values a problem placed in a file also comes from."""
    return f" (with {', '.join(str(where) for where in overrides)})" if overrides else ""


def problems_from_validation(exc: ValidationError, tree: SourcedTree, root: type[BaseModel]) -> list[Problem]:
    problems = []
    for err in exc.errors(include_url=False):
        loc = _data_path(tree.data, tuple(err["loc"]))
        loc += getattr((err.get("ctx") or {}).get("error"), "path", ())  # a problem inside a free mapping
        if err["type"] == "union_tag_invalid" and loc + ("type",) in tree.positions:
            loc = loc + ("type",)
        position = tree.position_of(loc)
        message = _message(err, root, loc, tree.data) + _family_hint(tree.data, loc, err)
        if err["type"] == "value_error" and not position.is_override:  # a rule across values, placed in the file
            message += with_overrides(tree.overrides_within(loc))
        problems.append(Problem(position, dotted(loc), message))
    return problems

"""Property: whatever a person does to a valid recipe, loading it either succeeds or raises RecipeError.

Valid recipe trees are mutated (a key deleted or renamed, a value replaced by a random scalar, list or
mapping, a `type:` changed, junk keys or junk text inserted, random `--set` overrides), written to a
temporary YAML file and loaded with the semantic checks on. Any exception other than RecipeError is a bug:
the CLI would print a traceback instead of `file:line:col: field: message`.
"""

from __future__ import annotations

import copy
import io
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from ruamel.yaml import YAML

from recipe_runner.errors import RecipeError
from recipe_runner.loader import load_recipe
from recipe_runner.yaml_source import SourcedTree, load_tree

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "tests" / "assets" / "broken" / "base.yaml", *sorted((ROOT / "recipes").rglob("*.yaml"))]

TYPE_NAMES = [
    "t5_encoder",
    "hidden_states",
    "linear",
    "mlp",
    "transformer",
    "residual_mlp",
    "rms_norm",
    "cross_tokenizer",
    "adamw",
    "constant",
    "linear",
    "cosine",
    "cosine_restarts",
    "huber",
    "mse",
    "t5",
    "qwen3",
]
WORDS = [  # valid choices somewhere in the schema: swapping them keeps a recipe valid but maybe inconsistent
    "matched",
    "split",
    "window",
    "sequence",
    "student",
    "bolt_on",
    "gelu",
    "silu",
    "pre",
    "post",
    "none",
    "fp16",
    "bf16",
    "cpu",
    "cuda",
    "fsdp",
    "unsloth",
    "float16",
    "t5",
    "qwen3",
    "llama",
    "teacher.final_norm",
]
KEY_NAMES = ["type", "model", "config", "tokenizer", "dim", "out_dim", "heads", "lr", "min_lr", "on", "weight"]


def _absolute_paths(node: Any, path: tuple[Any, ...], tree: SourcedTree) -> Any:
    """Relative paths made absolute (relative to the file that wrote them, also through `extends`), so that a
    copy of the recipe in a temporary directory still finds them."""
    if isinstance(node, dict):
        return {key: _absolute_paths(value, path + (key,), tree) for key, value in node.items()}
    if isinstance(node, list):
        return [_absolute_paths(value, path + (index,), tree) for index, value in enumerate(node)]
    if isinstance(node, str) and node.startswith(("./", "../")):
        return str((Path(tree.position_of(path).file).parent / node).resolve())
    return node


def _valid_trees() -> list[dict[str, Any]]:
    trees = []
    for file in SOURCES:
        tree = load_tree(file)
        data = _absolute_paths(tree.data, (), tree)
        data["output"] = {**data.get("output", {}), "dir": "runs/property"}
        trees.append(data)
    return trees


VALID_TREES = _valid_trees()


def _paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, path + (key,))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, path + (index,))
    return out


def _get(node: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        node = node[part]
    return node


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2, 16, 48, 64, 2000]),
    st.floats(allow_nan=True, allow_infinity=True),
    text,
    st.sampled_from(
        TYPE_NAMES
        + KEY_NAMES
        + ["teacher.final_norm", "matched", "split", "~no_such_user_xyz/x.txt", "x\x00.txt", "a/b", "/"]
    ),
)
keys = st.one_of(text.filter(bool), st.sampled_from(KEY_NAMES + TYPE_NAMES), st.integers(-5, 5))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(keys, inner, max_size=3),
    ),
    max_leaves=6,
)


@st.composite
def mutation(draw: st.DrawFn, tree: dict[str, Any]) -> None:
    """Change `tree` in place once."""
    paths = _paths(tree)
    path = draw(st.sampled_from(paths))
    kinds = ["delete", "replace", "rename", "retype", "insert", "renumber", "renumber", "reword"]
    kind = draw(st.sampled_from(kinds))
    node = _get(tree, path)
    if kind == "renumber":  # numbers stay numbers, so the schema passes and the semantic checks get to run
        numbers = [p for p in paths if isinstance(_get(tree, p), (int, float)) and not isinstance(_get(tree, p), bool)]
        if numbers:
            path = draw(st.sampled_from(numbers))
            small = st.one_of(st.integers(0, 130), st.floats(0, 2), st.sampled_from([1e-3, 1e-5, 16, 32, 48, 64, 96]))
            _get(tree, path[:-1])[path[-1]] = draw(small)
        return
    if kind == "reword":
        words = [p for p in paths if isinstance(_get(tree, p), str)]
        if words:
            path = draw(st.sampled_from(words))
            _get(tree, path[:-1])[path[-1]] = draw(st.sampled_from(WORDS))
        return
    if kind == "delete" and path:
        parent = _get(tree, path[:-1])
        del parent[path[-1]]
    elif kind == "replace" and path:
        parent = _get(tree, path[:-1])
        parent[path[-1]] = draw(values)
    elif kind == "rename" and path and isinstance(path[-1], str):
        parent = _get(tree, path[:-1])
        new = draw(keys)
        if new not in parent:
            parent[new] = parent.pop(path[-1])
    elif kind == "retype":
        holders = [p for p in paths if isinstance(_get(tree, p), dict) and "type" in _get(tree, p)]
        if holders:
            holder = _get(tree, draw(st.sampled_from(holders)))
            holder["type"] = draw(st.one_of(st.sampled_from(TYPE_NAMES), scalars))
    elif kind == "insert" and isinstance(node, dict):
        node[draw(keys)] = draw(values)
    elif kind == "insert" and isinstance(node, list):
        node.insert(draw(st.integers(0, len(node))), draw(values))


@st.composite
def mutated_recipes(draw: st.DrawFn) -> tuple[str, list[str]]:
    tree = copy.deepcopy(draw(st.sampled_from(VALID_TREES)))
    for _ in range(draw(st.integers(1, 3))):
        draw(mutation(tree))
    buffer = io.StringIO()
    yaml = YAML(typ="safe", pure=True)
    yaml.dump(tree, buffer)
    lines = buffer.getvalue().splitlines()
    if draw(st.integers(0, 9)) == 0:  # junk text: syntax errors, odd indentation, tabs, directives
        junk = draw(st.one_of(text, st.sampled_from(["\t- x", "  :", "- [", "%YAML 1.1", "---", "{a: 1", "*alias"])))
        lines.insert(draw(st.integers(0, len(lines))), junk)
    overrides: list[str] = []
    if draw(st.integers(0, 4)) == 0:
        dotted = ".".join(str(part) for part in draw(st.sampled_from(_paths(tree)[1:] or [("recipe",)])))
        overrides.append(draw(st.sampled_from([dotted, f"{dotted}.x", f"{dotted}.0"])) + "=" + draw(text))
    return "\n".join(lines) + "\n", overrides


def test_sources_are_valid() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for tree in VALID_TREES:
            file = Path(tmp) / "recipe.yaml"
            YAML(typ="safe", pure=True).dump(tree, file)
            load_recipe(file)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mutated_recipes())
def test_mutated_recipe_loads_or_raises_recipe_error(case: tuple[str, list[str]]) -> None:
    text_, overrides = case
    with tempfile.TemporaryDirectory() as tmp:
        file = Path(tmp) / "recipe.yaml"
        file.write_text(text_, encoding="utf-8")
        try:
            load_recipe(file, overrides, check=True)
        except RecipeError as exc:
            assert exc.problems, "a RecipeError must carry at least one problem"
            for problem in exc.problems:
                assert str(problem)

"""`--set KEY.PATH=VALUE` overrides applied to a recipe tree (recipe_runner.yaml_source.apply_overrides)."""

from __future__ import annotations

from pathlib import Path

import pytest
from yaml_testing import BASE_RECIPE, only_problem, write

from recipe_runner.errors import Problem, RecipeError
from recipe_runner.loader import load_recipe
from recipe_runner.yaml_source import SourcedTree, apply_overrides, load_tree

# --- --set overrides -------------------------------------------------------------------------------------------


TO_ADD = " to add one, set the list whole, --set 'stages=[...]' (`recipe show` prints its items)"


def tree_for_overrides(tmp_path: Path) -> SourcedTree:
    return load_tree(
        write(
            tmp_path,
            "r.yaml",
            "recipe: x\n"
            "hardware: {batch_size: 2}\n"
            "stages:\n"
            "  - name: a\n"
            "    lr: {student: 1.0e-4}\n"
            "    losses:\n"
            "      - {type: huber, on: matched}\n",
        )
    )


def test_override_nested_key(tmp_path: Path) -> None:
    tree = tree_for_overrides(tmp_path)
    apply_overrides(tree, ["hardware.batch_size=8", "hardware.precision=bf16"])
    assert tree.data["hardware"] == {"batch_size": 8, "precision": "bf16"}
    assert str(tree.positions[("hardware", "batch_size")]) == "--set #1 (hardware.batch_size=8)"
    assert str(tree.positions[("hardware", "precision")]) == "--set #2 (hardware.precision=bf16)"


def test_override_creates_missing_mappings(tmp_path: Path) -> None:
    tree = tree_for_overrides(tmp_path)
    apply_overrides(tree, ["output.dir=runs/x"])
    assert tree.data["output"] == {"dir": "runs/x"}


def test_override_list_index(tmp_path: Path) -> None:
    tree = tree_for_overrides(tmp_path)
    apply_overrides(tree, ["stages.0.lr.student=5e-4", "stages.0.losses.0.on=split"])
    assert tree.data["stages"][0]["lr"]["student"] == pytest.approx(5e-4)
    assert tree.data["stages"][0]["losses"][0] == {"type": "huber", "on": "split"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("recipe=42", 42),
        ("recipe=4.5", 4.5),
        ("recipe=true", True),
        ("recipe=null", None),
        ("recipe='007'", "007"),
        ("recipe=a=b", "a=b"),
        ("recipe=", ""),
        ("recipe=[1, two]", [1, "two"]),
        ("recipe={a: 1, b: [x]}", {"a": 1, "b": ["x"]}),
    ],
)
def test_override_value_is_parsed_as_yaml(tmp_path: Path, text: str, expected: object) -> None:
    tree = tree_for_overrides(tmp_path)
    apply_overrides(tree, [text])
    assert tree.data["recipe"] == expected


def test_override_replacing_a_subtree_drops_its_old_positions(tmp_path: Path) -> None:
    tree = tree_for_overrides(tmp_path)
    apply_overrides(tree, ["stages.0.losses=[]"])
    assert tree.data["stages"][0]["losses"] == []
    assert not any(p[:4] == ("stages", 0, "losses", 0) for p in tree.positions)
    assert tree.position_of(("stages", 0, "losses", 0, "type")).file.startswith("--set #1")


def override_problem(tmp_path: Path, text: str) -> Problem:
    tree = tree_for_overrides(tmp_path)
    with pytest.raises(RecipeError) as exc:
        apply_overrides(tree, [text])
    problem = only_problem(exc)
    assert str(problem.position) == f"--set #1 ({text})"
    return problem


def test_override_without_equals_sign(tmp_path: Path) -> None:
    problem = override_problem(tmp_path, "hardware.batch_size")
    assert problem.field == "--set"
    assert problem.message == "expected KEY.PATH=VALUE, e.g. stages.0.lr.student=5e-4"


@pytest.mark.parametrize("text", ["=3", "a..b=3", ".a=3", "a.=3"])
def test_override_with_bad_key_path(tmp_path: Path, text: str) -> None:
    problem = override_problem(tmp_path, text)
    assert problem.field == "--set"
    assert problem.message.startswith("bad key path")


def test_override_with_invalid_yaml_value(tmp_path: Path) -> None:
    problem = override_problem(tmp_path, "stages.0.lr=[1,")
    assert problem.field == "--set"
    assert problem.message.startswith("value '[1,' is not valid YAML")
    assert "\n" not in problem.message


@pytest.mark.parametrize(
    ("override", "field", "message"),
    [
        ("stages.3=x", "stages[3]", "no list item 3 (the list has 1):" + TO_ADD),
        ("stages.3.name=x", "stages[3]", "no list item 3 (the list has 1):" + TO_ADD),  # in the middle of the path
        (
            "stages.first.name=x",
            "stages.first",
            "no list item 'first' (the list has 1):" + TO_ADD,
        ),  # a name, not an index
    ],
)
def test_override_of_a_list_item_that_is_not_there(tmp_path: Path, override: str, field: str, message: str) -> None:
    problem = override_problem(tmp_path, override)
    assert problem.field == field
    assert problem.message == message


def test_override_below_a_scalar(tmp_path: Path) -> None:
    problem = override_problem(tmp_path, "hardware.batch_size.value=3")
    assert problem.field == "hardware.batch_size"
    assert problem.message == "is 2 here, not a mapping: set it whole instead (--set 'hardware.batch_size=...')"
    problem = override_problem(tmp_path, "stages.0.name.x=3")
    assert problem.field == "stages[0].name"  # the suggested --set numbers the item with a dot, as --set must
    assert problem.message.endswith("set it whole instead (--set 'stages.0.name=...')")


@pytest.mark.parametrize(
    ("override", "said"),
    [
        ("stage.0.steps=5", "unknown key 'stage'; did you mean 'stages'?"),  # a misspelt list, then an index
        ("hardware.0=1", "0 is not a key: hardware is a mapping of names, not a list (allowed: attention,"),
    ],
)
def test_an_index_under_a_mapping_is_named_by_the_schema(tmp_path: Path, override: str, said: str) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(BASE_RECIPE, [override], check=False)
    assert only_problem(exc).message.startswith(said)


def test_the_shipped_recipes_data_files_take_a_limit_by_override_and_by_extends(tmp_path: Path) -> None:
    from recipe_runner.loader import load_recipe

    recipe = Path(__file__).resolve().parents[2] / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"
    assert load_recipe(recipe, ["data.train.limit=50"], check=False).recipe.data.train.limit == 50
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {recipe}\ndata: {{eval: {{limit: 5}}}}\n")
    assert load_recipe(child, check=False).recipe.data.eval.limit == 5


def test_all_bad_overrides_are_reported_at_once(tmp_path: Path) -> None:
    tree = tree_for_overrides(tmp_path)
    with pytest.raises(RecipeError) as exc:
        apply_overrides(tree, ["nonsense", "hardware.batch_size=4", "stages.9.name=x", "recipe.x=1"])
    shown = [str(p) for p in exc.value.problems]
    assert len(shown) == 3
    assert any(s.startswith("--set #1 (nonsense): --set:") for s in shown)
    assert any(s.startswith("--set #3 (stages.9.name=x): stages[9]:") for s in shown)
    assert any(s.startswith("--set #4 (recipe.x=1): recipe:") for s in shown)


def test_overridden_value_is_checked_by_the_schema_at_the_override() -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(BASE_RECIPE, ["hardware.batch_size=0", "stages.0.lr.student=fast"], check=False)
    shown = sorted(str(p) for p in exc.value.problems)
    assert shown == [
        "--set #1 (hardware.batch_size=0): hardware.batch_size: must be > 0, got 0",
        "--set #2 (stages.0.lr.student=fast): stages[0].lr.student: expected a number, got 'fast'",
    ]


def test_override_applies_on_top_of_extends() -> None:
    loaded = load_recipe(BASE_RECIPE, ["hardware.batch_size=5", "stages.0.steps=7"], check=False)
    assert loaded.recipe.hardware.batch_size == 5
    assert loaded.recipe.stages[0].steps == 7


def test_an_unknown_section_made_by_an_override_is_blamed_on_the_override() -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(BASE_RECIPE, ["nosuch.x=1"], check=False)
    [problem] = exc.value.problems
    assert str(problem).startswith("--set #1 (nosuch.x=1): nosuch: unknown key 'nosuch'")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("stages[0].epochs=2", "list items are numbered with dots: write stages.0.epochs, not stages[0].epochs"),
        ("extends=base.yaml", "`extends` is read from recipe files only: write a small recipe that extends both"),
    ],
)
def test_overrides_written_as_elsewhere_say_how_to_write_them(tmp_path: Path, text: str, message: str) -> None:
    problem = override_problem(tmp_path, text)
    assert (problem.field, problem.message) == ("--set", message)

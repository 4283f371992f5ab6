"""YAML with positions, and the files that are not recipes (recipe_runner.yaml_source; `extends` and paths are in
test_yaml_extends_and_paths, `--set` in test_yaml_overrides)."""

from __future__ import annotations

from pathlib import Path

import pytest
from yaml_testing import only_problem, where, write

from recipe_runner.errors import Position, Problem, RecipeError
from recipe_runner.loader import load_recipe
from recipe_runner.yaml_source import MAX_FILE_BYTES, MAX_VALUES, SourcedTree, load_tree

# --- positions -------------------------------------------------------------------------------------------------


def test_positions_of_keys_and_list_items(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "r.yaml",
        "recipe: x\n"  # 1
        "stages:\n"  # 2
        "  - name: a\n"  # 3
        "    losses:\n"  # 4
        "      - {type: huber, on: matched}\n"  # 5
        "  - name: b\n"  # 6
        "tiers: [matched, split]\n",  # 7
    )
    tree = load_tree(file)
    assert tree.data["stages"][1] == {"name": "b"}
    assert where(tree.positions[()]) == ("r.yaml", 1, 1)
    assert where(tree.positions[("recipe",)]) == ("r.yaml", 1, 1)
    assert where(tree.positions[("stages",)]) == ("r.yaml", 2, 1)
    assert where(tree.positions[("stages", 0)]) == ("r.yaml", 3, 5)
    assert where(tree.positions[("stages", 0, "name")]) == ("r.yaml", 3, 5)
    assert where(tree.positions[("stages", 0, "losses")]) == ("r.yaml", 4, 5)
    assert where(tree.positions[("stages", 0, "losses", 0)]) == ("r.yaml", 5, 9)
    assert where(tree.positions[("stages", 0, "losses", 0, "on")]) == ("r.yaml", 5, 23)
    assert where(tree.positions[("stages", 1, "name")]) == ("r.yaml", 6, 5)
    assert where(tree.positions[("tiers", 0)]) == ("r.yaml", 7, 9)
    assert where(tree.positions[("tiers", 1)]) == ("r.yaml", 7, 18)


def test_position_of_falls_back_to_nearest_written_ancestor(tmp_path: Path) -> None:
    tree = load_tree(write(tmp_path, "r.yaml", "hardware:\n  batch_size: 2\n"))
    assert where(tree.position_of(("hardware", "batch_size"))) == ("r.yaml", 2, 3)
    assert where(tree.position_of(("hardware", "precision"))) == ("r.yaml", 1, 1)
    assert where(tree.position_of(("output", "dir"))) == ("r.yaml", 1, 1)
    assert str(SourcedTree({}).position_of(("a",))) == "<recipe>"


def test_position_string_is_file_line_col(tmp_path: Path) -> None:
    assert str(Position("x.yaml", 3, 7)) == "x.yaml:3:7"
    assert str(Position("--set #1 (a=1)")) == "--set #1 (a=1)"
    problem = Problem(Position("x.yaml", 3, 7), "stages[0].lr", "must be >= 0")
    assert str(problem) == "x.yaml:3:7: stages[0].lr: must be >= 0"


def test_scalars_become_plain_python_values(tmp_path: Path) -> None:
    tree = load_tree(write(tmp_path, "r.yaml", "a: 1\nb: 1.5e-4\nc: true\nd: text\ne: null\nf: [1, x]\n"))
    assert tree.data == {"a": 1, "b": 1.5e-4, "c": True, "d": "text", "e": None, "f": [1, "x"]}
    assert type(tree.data["a"]) is int
    assert type(tree.data["b"]) is float
    assert type(tree.data["d"]) is str
    assert type(tree.data["f"]) is list


def test_anchor_merge_keys_and_omap_keep_a_position(tmp_path: Path) -> None:
    file = write(
        tmp_path,
        "r.yaml",
        "defaults: &d {batch_size: 2, seed: 1}\nhardware:\n  <<: *d\n  seed: 3\nordered: !!omap [a: 1]\n",
    )
    tree = load_tree(file)
    assert tree.data["hardware"] == {"batch_size": 2, "seed": 3}
    assert where(tree.positions[("hardware", "seed")]) == ("r.yaml", 4, 3)
    assert tree.positions[("hardware", "batch_size")].file == str(file.resolve())
    assert tree.positions[("ordered", "a")].file == str(file.resolve())


def test_aliases_are_expanded_with_their_anchor_values(tmp_path: Path) -> None:
    file = write(tmp_path, "r.yaml", "base: &b {k: [1, 2]}\nuses:\n  one: *b\n  list: [*b, *b]\n")
    tree = load_tree(file)
    assert tree.data["uses"] == {"one": {"k": [1, 2]}, "list": [{"k": [1, 2]}, {"k": [1, 2]}]}
    assert tree.data["uses"]["one"] is not tree.data["base"], "plain data: no shared objects"


def _alias_bomb(levels: int) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{n}: &l{n} [{', '.join([f'*l{n - 1}'] * 10)}]" for n in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_nested_aliases_stop_at_a_bounded_size(tmp_path: Path) -> None:
    """Nine levels would be 10^9 values (tens of GB); the count stops them at the alias that crosses the limit."""
    file = write(tmp_path, "bomb.yaml", _alias_bomb(9))
    assert file.stat().st_size < 600
    with pytest.raises(RecipeError) as exc:
        load_tree(file)
    problem = only_problem(exc)
    assert where(problem.position) == ("bomb.yaml", 5, 1)
    assert problem.field == "l4[7]"
    assert problem.message == f"expands to more than {MAX_VALUES} values (nested aliases?)"


def test_a_long_text_aliased_many_times_stops_at_the_text_limit(tmp_path: Path) -> None:
    """Few values, each a 100 KB text: 130 KB of file would otherwise take over a GB of memory."""
    text = "x-s: &s " + "x" * 100_000 + "\nx-l: [" + ", ".join(["*s"] * 10_000) + "]\n"
    with pytest.raises(RecipeError) as exc:
        load_tree(write(tmp_path, "bomb.yaml", text))
    assert only_problem(exc).message.startswith("expands to more than 10 million characters of text")


@pytest.mark.parametrize(("value", "tag"), [("!!set {a}", "!!set"), ("!!binary aGVsbG8=", "!!binary")])
def test_a_core_tag_that_builds_no_plain_value_is_refused_at_its_place(tmp_path: Path, value: str, tag: str) -> None:
    with pytest.raises(RecipeError) as exc:
        load_tree(write(tmp_path, "r.yaml", f"recipe: x\ndescription: {value}\n"))
    problem = only_problem(exc)
    assert where(problem.position) == ("r.yaml", 2, 1) and problem.message.startswith(f"YAML tag {tag} is not allowed")


def test_a_device_or_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as exc:
        load_tree(write(tmp_path, "r.yaml", "extends: /dev/zero\n"))
    assert only_problem(exc).message == "'/dev/zero' is not a regular file (a device or pipe)"
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as handle:
        handle.truncate(MAX_FILE_BYTES + 1)
    with pytest.raises(RecipeError) as exc:
        load_tree(huge)
    assert only_problem(exc).message.endswith("is this a recipe file?")


def test_a_recipe_just_under_the_limit_loads(tmp_path: Path) -> None:
    tree = load_tree(write(tmp_path, "r.yaml", _alias_bomb(4)))
    assert len(tree.data["l3"]) == 10 and len(tree.data["l3"][0][0]) == 10


def test_an_alias_inside_a_mapping_is_reported_at_its_key(tmp_path: Path) -> None:
    text = _alias_bomb(4) + "hardware:\n  big: {" + ", ".join(f"{key}: *l3" for key in "abcdefghij") + "}\n"
    with pytest.raises(RecipeError) as exc:
        load_tree(write(tmp_path, "r.yaml", text))
    problem = only_problem(exc)
    assert (where(problem.position), problem.field) == (("r.yaml", 6, 65), "hardware.big.h")


# --- files that are not recipes --------------------------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    file = write(tmp_path, "bad.yaml", "recipe: x\nhardware:\n  batch_size: [1, 2\n  seed: 3\n")
    with pytest.raises(RecipeError) as exc:
        load_tree(file)
    problem = only_problem(exc)
    assert where(problem.position) == ("bad.yaml", 3, 15)  # where the [ opens, not where the parser gave up
    assert problem.field == "<yaml>"
    assert problem.message.startswith("YAML syntax error: the [ opened here is never closed")


@pytest.mark.parametrize(
    ("text", "place", "hint"),
    [
        ('recipe: x\ndescription: "unclosed\nhardware:\n  seed: 4\n', (2, 14), "the quote opened here is never closed"),
        ("recipe: x\nhardware:\n  seed: 3\n  batch_size:4\n", (4, 3), "a key needs ': ' after it"),
        ("recipe: x\nhardware:\n\tseed: 3\n", (3, 1), "YAML indents with spaces, never tabs"),
        ("recipe: x\nhardware:\n  seed: !!float 'abc'\n", (3, 9), "drop the tag (!!int, !!float)"),
    ],
)
def test_slips_made_by_hand_are_named_where_they_are_with_what_to_do(tmp_path, text, place, hint) -> None:
    with pytest.raises(RecipeError) as exc:
        load_tree(write(tmp_path, "r.yaml", text))
    problem = only_problem(exc)
    assert where(problem.position) == ("r.yaml", *place) and hint in problem.message


@pytest.mark.parametrize(
    ("value", "shown"),
    [("!!python/object/apply:os.system ['echo hi']", "!!python/object/apply:os.system"), ("!custom {x: 1}", "!custom")],
)
def test_a_yaml_tag_is_an_error_at_its_place(tmp_path: Path, value: str, shown: str) -> None:
    file = write(tmp_path, "tagged.yaml", f"recipe: x\nhardware:\n  seed: {value}\n")
    with pytest.raises(RecipeError) as exc:
        load_tree(file)
    problem = only_problem(exc)
    assert where(problem.position) == ("tagged.yaml", 3, 3) and problem.field == "hardware.seed"
    assert problem.message.startswith(f"YAML tag {shown} is not allowed")


def test_core_tags_are_read_as_written(tmp_path: Path) -> None:
    file = write(tmp_path, "core.yaml", "recipe: !!str 5\nhardware: !!map {seed: !!int '3'}\n")
    assert load_tree(file).data == {"recipe": "5", "hardware": {"seed": 3}}


def test_tab_indentation_is_a_syntax_error(tmp_path: Path) -> None:
    file = write(tmp_path, "bad.yaml", "recipe: x\n\tseed: 3\n")
    with pytest.raises(RecipeError) as exc:
        load_tree(file)
    problem = only_problem(exc)
    assert where(problem.position) == ("bad.yaml", 2, 1)
    assert "'\\t'" in problem.message


@pytest.mark.parametrize(
    ("text", "key", "first", "again"),
    [
        ("recipe: x\nhardware:\n  seed: 1\n  device: cpu\n  'seed': 2\n", "seed", 3, (5, 3)),
        ("stages:\n  - name: a\n    steps: 3\nrecipe: x\nstages:\n  - {name: b, steps: 4}\n", "stages", 1, (5, 1)),
    ],
)
def test_a_key_given_twice_names_both_lines_and_never_dumps_the_values(tmp_path, text, key, first, again) -> None:
    file = write(tmp_path, "dup.yaml", text)
    with pytest.raises(RecipeError) as exc:
        load_tree(file)
    problem = only_problem(exc)
    assert where(problem.position) == ("dup.yaml", *again)
    assert problem.message == (
        f"key '{key}' appears twice in the same mapping (first given on line {first}): merge the two into one '{key}'"
    )


def test_every_key_given_twice_and_every_refused_tag_is_reported_at_once(tmp_path: Path) -> None:
    """One edit-and-rerun per mistake is what a person fixing a pasted recipe should not go through."""
    text = "recipe: x\nhardware:\n  seed: 1\n  seed: 2\nrecipe: y\nx-base: &b {a: 1, a: 2}\nx-again: *b\n"
    with pytest.raises(RecipeError) as exc:
        load_tree(write(tmp_path, "dup.yaml", text))
    found = [(where(p.position)[1:], p.message.split(" (")[0]) for p in exc.value.problems]
    assert found == [
        ((4, 3), "key 'seed' appears twice in the same mapping"),
        ((5, 1), "key 'recipe' appears twice in the same mapping"),
        ((6, 19), "key 'a' appears twice in the same mapping"),  # once, though aliased again below
    ]
    text = "recipe: !!python/name:os.system x\nhardware: {seed: !!binary aGk=}\ndata: !custom {train: a}\n"
    with pytest.raises(RecipeError) as exc:
        load_tree(write(tmp_path, "tags.yaml", text))
    found = [(p.field, p.message.split(" is not")[0]) for p in exc.value.problems]
    assert found == [
        ("recipe", "YAML tag !!python/name:os.system"),
        ("hardware.seed", "YAML tag !!binary"),
        ("data", "YAML tag !custom"),
    ]


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_an_empty_file_is_said_to_be_empty_not_six_missing_sections(tmp_path: Path, text: str) -> None:
    """A copy cut short: five `required field is missing` lines never said what happened."""
    file = write(tmp_path, "empty.yaml", text)
    with pytest.raises(RecipeError) as exc:
        load_recipe(file, check=False)
    problem = only_problem(exc)
    assert problem.message.startswith("the file is empty (or holds only comments): a recipe is a mapping")


def test_a_tab_inside_a_value_is_not_called_indentation(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as exc:
        load_tree(write(tmp_path, "r.yaml", "recipe: t\ndescription: a\tb\n"))
    problem = only_problem(exc)
    assert where(problem.position) == ("r.yaml", 2, 15) and "a tab inside a value: quote the value" in problem.message


@pytest.mark.parametrize("text", ["- a\n- b\n", "just text\n", "42\n"])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    file = write(tmp_path, "list.yaml", text)
    with pytest.raises(RecipeError) as exc:
        load_tree(file)
    problem = only_problem(exc)
    assert where(problem.position) == ("list.yaml", 1, 1)
    assert problem.message == "a recipe must be a mapping of sections"


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as exc:
        load_tree(tmp_path / "absent.yaml")
    problem = only_problem(exc)
    assert Path(problem.position.file).name == "absent.yaml"
    assert problem.message == "file not found"


def test_an_undecodable_byte_is_named_at_its_line_and_column(tmp_path: Path) -> None:
    file = tmp_path / "latin1.yaml"
    file.write_bytes("recipe: x\ndescription: caf\xe9\n".encode("latin-1"))
    with pytest.raises(RecipeError) as exc:
        load_tree(file)
    problem = only_problem(exc)
    assert (problem.position.line, problem.position.col) == (2, 17)
    assert problem.message == "not UTF-8 (byte 0xe9): save the file as UTF-8"


def test_nesting_deeper_than_the_parser_can_go_is_named_where_it_gets_deep(tmp_path: Path) -> None:
    file = tmp_path / "deep.yaml"
    file.write_text("recipe: x  # [[[ in a comment\nteacher: {a: '[{', b: " + "[" * 5000 + "]" * 5000 + "}\n")
    with pytest.raises(RecipeError) as exc:
        load_tree(file)
    problem = only_problem(exc)
    assert (problem.position.line, problem.position.col) == (2, 22 + 100)  # the 101st bracket, with teacher's {
    assert problem.message.startswith("nested more than 100 levels deep here (brackets left open?)")

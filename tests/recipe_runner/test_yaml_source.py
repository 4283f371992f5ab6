"""YAML with positions and `extends` deep merge (recipe_runner.yaml_source; `--set` is in test_yaml_overrides)."""

from __future__ import annotations

from pathlib import Path

import pytest
from yaml_testing import BASE_RECIPE, only_problem, where, write

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


# --- extends ---------------------------------------------------------------------------------------------------


def test_extends_merges_mappings_replaces_lists_and_null_replaces(tmp_path: Path) -> None:
    write(
        tmp_path,
        "base.yaml",
        "recipe: base\n"
        "hardware: {batch_size: 2, precision: fp32}\n"
        "teacher:\n"
        "  model: org/teacher\n"
        "  cache: {dir: c, shard_size: 8}\n"
        "tiers: [matched, split, sequence]\n"
        "keep: [1, 2]\n",
    )
    child = write(
        tmp_path,
        "child.yaml",
        "extends: base.yaml\n"
        "recipe: child\n"
        "hardware: {batch_size: 4}\n"
        "teacher:\n"
        "  model: null\n"
        "  cache: {shard_size: 16}\n"
        "tiers: [sequence]\n",
    )
    tree = load_tree(child)
    assert tree.data == {
        "recipe": "child",
        "hardware": {"batch_size": 4, "precision": "fp32"},
        "teacher": {"model": None, "cache": {"dir": "c", "shard_size": 16}},
        "tiers": ["sequence"],
        "keep": [1, 2],
    }
    assert "extends" not in tree.data
    # Overridden values point into the child, inherited ones into the base.
    assert where(tree.positions[("hardware", "batch_size")]) == ("child.yaml", 3, 12)
    assert where(tree.positions[("hardware", "precision")]) == ("base.yaml", 2, 27)
    assert where(tree.positions[("teacher", "model")]) == ("child.yaml", 5, 3)
    assert where(tree.positions[("teacher", "cache", "dir")]) == ("base.yaml", 5, 11)
    assert where(tree.positions[("tiers", 0)]) == ("child.yaml", 7, 9)
    # A replaced list leaves no stale positions of the base's longer list behind.
    assert ("tiers", 1) not in tree.positions
    assert ("tiers", 2) not in tree.positions
    assert where(tree.positions[("keep", 1)]) == ("base.yaml", 7, 11)
    assert not any(path[:1] == ("extends",) for path in tree.positions)


def test_an_empty_list_of_bases_inherits_nothing(tmp_path: Path) -> None:
    tree = load_tree(write(tmp_path, "alone.yaml", "extends: []\na: 1\n"))
    assert tree.data == {"a": 1}
    assert ("extends",) not in tree.positions


def test_mapping_replaced_by_scalar_and_scalar_by_mapping(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "a: {x: 1, y: 2}\nb: 5\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\na: 3\nb: {z: 1}\n")
    tree = load_tree(child)
    assert tree.data == {"a": 3, "b": {"z": 1}}
    assert ("a", "x") not in tree.positions
    assert where(tree.positions[("b", "z")]) == ("child.yaml", 3, 5)


def test_extends_chain_and_list_of_bases(tmp_path: Path) -> None:
    write(tmp_path, "root.yaml", "a: {x: 1, y: 1, z: 1}\n")
    (tmp_path / "sub").mkdir()
    write(tmp_path / "sub", "mid.yaml", "extends: ../root.yaml\na: {y: 2}\n")
    write(tmp_path, "other.yaml", "a: {z: 3}\nb: 1\n")
    child = write(tmp_path, "child.yaml", "extends: [sub/mid.yaml, other.yaml]\na: {x: 4}\n")
    tree = load_tree(child)
    assert tree.data == {"a": {"x": 4, "y": 2, "z": 3}, "b": 1}
    assert where(tree.positions[("a", "y")]) == ("mid.yaml", 2, 5)
    assert where(tree.positions[("a", "z")]) == ("other.yaml", 1, 5)
    assert where(tree.positions[("a", "x")]) == ("child.yaml", 2, 5)


def test_syntax_error_in_extended_file_points_into_that_file(tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", "a: 1\nb: [1, 2\nc: 3\n")
    child = write(tmp_path, "child.yaml", "extends: base.yaml\na: 2\n")
    with pytest.raises(RecipeError) as exc:
        load_tree(child)
    problem = only_problem(exc)
    assert Path(problem.position.file).name == "base.yaml"
    assert problem.position.line == 2
    assert "YAML syntax error" in problem.message


def test_schema_error_in_inherited_value_points_into_the_base(tmp_path: Path) -> None:
    base = BASE_RECIPE.read_text(encoding="utf-8").replace("batch_size: 2", "batch_size: -3")
    base = base.replace("../../../", str(BASE_RECIPE.parents[3]) + "/")
    line = next(n for n, text in enumerate(base.splitlines(), 1) if "batch_size: -3" in text)
    write(tmp_path, "base.yaml", base)
    child = write(tmp_path, "child.yaml", "extends: base.yaml\nrecipe: child\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(child, check=False)
    problem = only_problem(exc)
    assert where(problem.position) == ("base.yaml", line, 3)
    assert problem.field == "hardware.batch_size"
    assert problem.message == "must be > 0, got -3"


def test_extends_cycle_is_reported_with_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "extends: b.yaml\n")
    write(tmp_path, "b.yaml", "x: 1\nextends: c.yaml\n")
    write(tmp_path, "c.yaml", "extends: a.yaml\n")
    with pytest.raises(RecipeError) as exc:
        load_tree(tmp_path / "a.yaml")
    problem = only_problem(exc)
    assert problem.field == "extends"
    assert problem.message == "extends cycle: a.yaml -> b.yaml -> c.yaml -> a.yaml"
    assert where(problem.position) == ("c.yaml", 1, 1)


def test_a_file_extending_itself_is_a_cycle(tmp_path: Path) -> None:
    write(tmp_path, "self.yaml", "recipe: x\nextends: ./self.yaml\n")
    with pytest.raises(RecipeError) as exc:
        load_tree(tmp_path / "self.yaml")
    problem = only_problem(exc)
    assert problem.message == "extends cycle: self.yaml -> self.yaml"
    assert where(problem.position) == ("self.yaml", 2, 1)


def test_diamond_extends_is_not_a_cycle(tmp_path: Path) -> None:
    write(tmp_path, "root.yaml", "a: 1\n")
    write(tmp_path, "left.yaml", "extends: root.yaml\nb: 2\n")
    write(tmp_path, "right.yaml", "extends: root.yaml\nc: 3\n")
    child = write(tmp_path, "child.yaml", "extends: [left.yaml, right.yaml]\n")
    assert load_tree(child).data == {"a": 1, "b": 2, "c": 3}


def test_missing_base_file(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", "recipe: x\nextends: nowhere.yaml\n")
    with pytest.raises(RecipeError) as exc:
        load_tree(child)
    problem = only_problem(exc)
    assert where(problem.position) == ("child.yaml", 2, 1)
    assert problem.field == "extends"
    assert "base recipe 'nowhere.yaml' not found" in problem.message


def test_extends_naming_a_folder(tmp_path: Path) -> None:
    (tmp_path / "recipes").mkdir()
    child = write(tmp_path, "child.yaml", "recipe: x\nextends: recipes\n")
    with pytest.raises(RecipeError) as exc:
        load_tree(child)
    problem = only_problem(exc)
    assert (where(problem.position), problem.field) == (("child.yaml", 2, 1), "extends")
    assert problem.message == "'recipes' is a directory, not a recipe file"


@pytest.mark.parametrize("value", ["''", "[a.yaml, ' ']"])
def test_extends_with_an_empty_name_says_so(tmp_path: Path, value: str) -> None:
    write(tmp_path, "a.yaml", "recipe: a\n")
    child = write(tmp_path, "child.yaml", f"recipe: x\nextends: {value}\n")
    with pytest.raises(RecipeError) as exc:
        load_tree(child)
    assert only_problem(exc).message == "an empty file name: name the base recipe, or remove extends"


def test_a_folder_given_as_the_recipe(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as exc:
        load_tree(tmp_path)
    assert only_problem(exc).message == "is a directory, not a recipe file"


@pytest.mark.parametrize("value", ["3", "{a: b.yaml}", "[a.yaml, 3]"])
def test_extends_must_name_files(tmp_path: Path, value: str) -> None:
    child = write(tmp_path, "child.yaml", f"extends: {value}\n")
    with pytest.raises(RecipeError) as exc:
        load_tree(child)
    problem = only_problem(exc)
    assert where(problem.position) == ("child.yaml", 1, 1)
    assert problem.message == "must be a file name or a list of file names"


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


@pytest.mark.parametrize("text", ["", "# only a comment\n", "---\n"])
def test_empty_file_is_an_empty_recipe(tmp_path: Path, text: str) -> None:
    file = write(tmp_path, "empty.yaml", text)
    assert load_tree(file).data == {}
    with pytest.raises(RecipeError) as exc:
        load_recipe(file, check=False)
    missing = {p.field for p in exc.value.problems if p.message == "required field is missing"}
    assert {"recipe", "teacher", "student", "data", "stages", "output"} <= missing
    assert all(where(p.position) == ("empty.yaml", 1, 1) for p in exc.value.problems)


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


# --- paths -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("data.train=~no_such_user_xyz/prompts.txt", "data.train.path"),
        ('student.tokenizer="tok\\0"', "student.tokenizer"),
        ("output.dir=~no_such_user_xyz/out", "output.dir"),
        (f"data.train=./{'a' * 300}.txt", "data.train.path"),
        (f"student.tokenizer=/tmp/{'b' * 300}", "student.tokenizer"),
        (f"output.dir=/tmp/{'c' * 300}/out", "output.dir"),
    ],
)
def test_unusable_path_is_a_problem_not_a_crash(override: str, field: str) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(BASE_RECIPE, [override], check=False)
    problem = only_problem(exc)
    assert problem.field == field
    assert problem.message.startswith("bad path ")
    assert str(problem.position) == f"--set #1 ({override})"
    if len(override) > 300:
        assert problem.message.endswith("longer than the file system allows (255 bytes per name): shorten it")


def test_a_symlink_loop_is_named_as_one_wherever_a_path_meets_it(tmp_path: Path) -> None:
    (tmp_path / "loop1").symlink_to(tmp_path / "loop2")
    (tmp_path / "loop2").symlink_to(tmp_path / "loop1")
    loop = "it runs through a symlink loop: fix or remove the link"
    child = write(tmp_path, "child.yaml", "extends: ./loop1\n")
    with pytest.raises(RecipeError) as exc:
        load_tree(child)
    assert (only_problem(exc).field, only_problem(exc).message) == ("extends", f"bad path './loop1': {loop}")
    with pytest.raises(RecipeError) as exc:
        load_tree(tmp_path / "loop1")
    assert (only_problem(exc).field, only_problem(exc).message) == ("<recipe>", loop)
    with pytest.raises(RecipeError) as exc:
        load_recipe(BASE_RECIPE, [f"output.dir={tmp_path / 'loop1' / 'out'}"], check=False)
    assert only_problem(exc).message.endswith(loop)


@pytest.mark.parametrize(
    ("override", "field"),
    [("output.dir=", "output.dir"), ('output.dir=" "', "output.dir"), ('teacher.cache={dir: ""}', "teacher.cache.dir")],
)
def test_an_empty_path_is_a_problem_not_the_current_folder(override: str, field: str) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(BASE_RECIPE, [override], check=False)
    problem = only_problem(exc)
    assert (problem.field, problem.message) == (field, "empty path: give a file or directory")
    assert str(problem.position) == f"--set #1 ({override})"


def test_relative_paths_are_relative_to_the_file_that_wrote_them(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", f"extends: {BASE_RECIPE}\noutput: {{dir: here}}\n")
    loaded = load_recipe(child, check=False)
    assert loaded.recipe.output.dir == str(tmp_path.resolve() / "here")
    assert loaded.recipe.data.train.path == str(BASE_RECIPE.parents[3] / "data" / "prompts" / "train.txt")


@pytest.mark.parametrize("override", ["output.dir=$HOME/runs/x", "data.train=${DATA}/train.txt"])
def test_an_environment_variable_in_a_path_is_refused_not_taken_literally(override: str) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(BASE_RECIPE, [override], check=False)
    assert only_problem(exc).message.endswith(
        ": environment variables are not expanded in a recipe (it would mean another place on every machine): write "
        "the path relative to the recipe file, or absolute"
    )


def test_extends_expands_the_home_folder_and_refuses_variables(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    write(tmp_path / "home", "base.yaml", "recipe: base\n")
    child = write(tmp_path, "child.yaml", "extends: ~/base.yaml\n")
    assert load_tree(child).data == {"recipe": "base"}
    child = write(tmp_path, "child.yaml", "extends: $HOME/base.yaml\n")
    with pytest.raises(RecipeError) as exc:
        load_tree(child)
    assert only_problem(exc).message.startswith("'$HOME/base.yaml': environment variables are not expanded")


def test_top_level_x_keys_hold_yaml_anchors_and_are_left_out(tmp_path: Path) -> None:
    file = write(tmp_path, "r.yaml", "x-hw: &hw {seed: 3}\nrecipe: r\nhardware: *hw\n")
    tree = load_tree(file)
    assert tree.data == {"recipe": "r", "hardware": {"seed": 3}}
    assert all(path[:1] != ("x-hw",) for path in tree.positions)


def test_a_template_key_without_the_x_prefix_is_told_about_it() -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(BASE_RECIPE, ["x_defaults={seed: 3}"], check=False)
    assert only_problem(exc).message.endswith(
        "; a top-level key for YAML anchors only must start with x- (it is left out)"
    )

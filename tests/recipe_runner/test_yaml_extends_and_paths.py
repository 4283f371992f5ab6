"""`extends` deep merge and the paths a recipe names, as recipe_runner.yaml_source reads them."""

from __future__ import annotations

from pathlib import Path

import pytest
from yaml_testing import BASE_RECIPE, only_problem, where, write

from recipe_runner.errors import RecipeError
from recipe_runner.loader import load_recipe
from recipe_runner.yaml_source import load_tree

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


def test_in_a_diamond_the_second_base_does_not_restore_through_the_shared_one_what_the_first_changed(tmp_path):
    """root, then left, then right, then the file: each file's own settings once, the most general first."""
    write(tmp_path, "root.yaml", "hardware: {batch_size: 4, seed: 1}\nx: {drop: 1}\n")
    write(tmp_path, "left.yaml", "extends: root.yaml\nhardware: {batch_size: 8}\nx: {drop: null}\n")
    write(tmp_path, "right.yaml", "extends: root.yaml\nhardware: {seed: 7}\n")
    child = write(tmp_path, "child.yaml", "extends: [left.yaml, right.yaml]\n")
    tree = load_tree(child)
    assert tree.data["hardware"] == {"batch_size": 8, "seed": 7}
    assert tree.positions[("hardware", "batch_size")].file.endswith("left.yaml")
    assert tree.data["x"] == {"drop": None}, "a removal (null: the default) in the first base stays"
    both_ways = write(tmp_path, "other.yaml", "extends: [right.yaml, left.yaml]\n")
    assert load_tree(both_ways).data["hardware"] == {"batch_size": 8, "seed": 7}


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


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ('""', "empty path: give a .txt (one prompt per line) or .jsonl file"),
        ("prompts.csv", "unsupported data file 'prompts.csv': use .txt (one prompt per line) or .jsonl"),
    ],
)
def test_a_data_file_problem_is_placed_at_the_path_that_made_it(path: str, message: str) -> None:
    """Not at `data.train` in the base file that the `--set` overrode."""
    override = f"data.train={{path: {path}, limit: 5}}"
    with pytest.raises(RecipeError) as exc:
        load_recipe(BASE_RECIPE, [override], check=False)
    problem = only_problem(exc)
    assert (problem.field, problem.message) == ("data.train.path", message)
    assert str(problem.position) == f"--set #1 ({override})"


def test_relative_paths_are_relative_to_the_file_that_wrote_them(tmp_path: Path) -> None:
    child = write(tmp_path, "child.yaml", f"extends: {BASE_RECIPE}\noutput: {{dir: here}}\n")
    loaded = load_recipe(child, check=False)
    assert loaded.recipe.output.dir == str(tmp_path.resolve() / "here")
    assert loaded.recipe.data.train.path == str(BASE_RECIPE.parents[3] / "data" / "prompts" / "train.txt")


@pytest.mark.parametrize("override", ["output.dir=$HOME/runs/x", "data.train=${DATA}/train.txt"])
def test_an_environment_variable_in_a_path_is_refused_not_taken_literally(override: str, tmp_path: Path) -> None:
    """In a file: relative to that file. On the command line the shell would have expanded it (single quotes
    kept it), and a relative path there is relative to the current folder."""
    key, value = override.split("=")
    section, name = key.split(".")
    child = write(tmp_path, "child.yaml", f"extends: {BASE_RECIPE}\n{section}: {{{name}: '{value}'}}\n")
    with pytest.raises(RecipeError) as exc:
        load_recipe(child, check=False)
    assert only_problem(exc).message.endswith(
        ": environment variables are not expanded in a recipe (it would mean another place on every machine): write "
        "the path relative to the recipe file, or absolute"
    )
    with pytest.raises(RecipeError) as exc:
        load_recipe(BASE_RECIPE, [override], check=False)
    assert only_problem(exc).message.endswith(
        ": environment variables are not expanded in a --set value: let the shell expand it (double quotes or none, "
        "not single quotes), or write the path relative to the current folder, or absolute"
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


def test_a_path_written_from_the_current_folder_says_how_the_recipe_names_it(tmp_path: Path, monkeypatch) -> None:
    """People write paths as they would type them in the shell; a recipe reads them from its own folder."""
    repo = Path(__file__).resolve().parents[2]
    (tmp_path / "data").symlink_to(repo / "data")
    (tmp_path / "mine").mkdir()
    recipe = write(tmp_path / "mine", "r.yaml", (
        f"extends: {repo / 'recipes' / 'examples' / 't5_to_qwen_tiny.yaml'}\nrecipe: mine\n"
        "data: {train: data/prompts/train.txt}\nstudent: {tokenizer: data/tokenizers/tiny_qwen}\n"
    ))  # fmt: skip
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe)
    said = {problem.field: problem.message for problem in exc.value.problems}
    folder = tmp_path / "mine"
    assert said["data.train"].endswith(
        f"(a path in a recipe is relative to the recipe's folder, {folder}: from there, data/prompts/train.txt in "
        "the current folder is ../data/prompts/train.txt)"
    )
    assert said["student.tokenizer"].endswith("from there, data/tokenizers/tiny_qwen in the current folder is "
                                              "../data/tokenizers/tiny_qwen)")  # fmt: skip
    monkeypatch.chdir(folder)  # found from neither place: no hint
    with pytest.raises(RecipeError) as exc:
        load_recipe(recipe)
    assert all("current folder" not in problem.message for problem in exc.value.problems)

"""Every shipped recipe validates and plans offline (models built on the meta device, nothing downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from recipe_runner.cli import main
from recipe_runner.loader import load_recipe

RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"
RECIPES = sorted(RECIPES_DIR.rglob("*.yaml")) + sorted(RECIPES_DIR.rglob("*.yml"))
IDS = [str(file.relative_to(RECIPES_DIR)) for file in RECIPES]


def test_recipes_exist() -> None:
    names = {file.name for file in RECIPES}
    assert "t5_to_qwen.yaml" in names
    assert any(file.parent.name == "examples" for file in RECIPES), "no CPU-sized example recipe"


@pytest.mark.parametrize("file", RECIPES, ids=IDS)
def test_recipe_loads_with_checks(file: Path) -> None:
    loaded = load_recipe(file)
    assert loaded.recipe.recipe
    assert Path(loaded.recipe.data.train.path).is_file()


@pytest.mark.parametrize("file", RECIPES, ids=IDS)
def test_recipe_validates(file: Path) -> None:
    result = CliRunner().invoke(main, ["validate", str(file)])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith(": ok")
    assert "warning" not in result.stderr  # a shipped recipe holds no value that does nothing


@pytest.mark.parametrize("file", RECIPES, ids=IDS)
def test_recipe_plans_offline(file: Path) -> None:
    result = CliRunner().invoke(main, ["plan", str(file)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert result.stdout.strip()
    assert "Traceback" not in result.output


@pytest.mark.parametrize("file", RECIPES, ids=IDS)
def test_the_shown_recipe_loads_again_as_the_same_recipe(file: Path, tmp_path: Path) -> None:
    """What `show` prints is what a run keeps as resolved_recipe.yaml, and what a resume is told to use."""
    result = CliRunner().invoke(main, ["show", str(file)])
    assert result.exit_code == 0, result.output
    assert "recipe:" in result.stdout
    shown = tmp_path / "resolved.yaml"
    shown.write_text(result.stdout)
    assert load_recipe(shown).recipe == load_recipe(file).recipe

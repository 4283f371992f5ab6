"""`recipe align-report`: per-tier coverage table for either split, and errors without a traceback."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from components.alignment.report import coverage_report
from components.models import load_tokenizer
from recipe_runner.cli import main
from recipe_runner.loader import load_recipe

ROOT = Path(__file__).parents[3]
TINY = ROOT / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"
PROMPTS = ROOT / "data" / "prompts"
SMALL = [
    f"data.train={{path: {PROMPTS / 'train.txt'}, limit: 12}}",
    f"data.eval={{path: {PROMPTS / 'eval.txt'}, limit: 5}}",
]


def _invoke(*args: str):
    return CliRunner().invoke(main, ["align-report", *args])


def test_prints_a_row_per_tier_matching_coverage_report(tmp_path):
    overrides = [*SMALL, f"output.dir={tmp_path}"]
    result = _invoke(str(TINY), *[arg for o in overrides for arg in ("--set", o)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    lines = result.stdout.splitlines()
    assert lines[0] == "train split of t5_to_qwen_tiny"
    assert lines[1].startswith("texts: 12 ")

    recipe = load_recipe(TINY, overrides).recipe
    prompts = [line.strip() for line in (PROMPTS / "train.txt").read_text().splitlines() if line.strip()][:12]
    report = coverage_report(
        prompts, load_tokenizer(recipe.student), load_tokenizer(recipe.teacher), recipe.alignment, 128, 128
    )
    rows = {line.split()[0]: line.split()[1:] for line in lines[3:]}
    for tier in ("matched", "split", "window", "any"):
        assert rows[tier][0] == str(report["covered_student_tokens"][tier])
        assert rows[tier][1] == f"{report['coverage'][tier]:.1%}"
    assert rows["sequence"] == [str(report["covered_student_tokens"]["sequence"]), "100.0%"]  # nothing cut here
    assert rows["any"][1] != "0.0%"


def test_eval_split_uses_the_eval_prompts(tmp_path):
    args = [arg for o in [*SMALL, f"output.dir={tmp_path}"] for arg in ("--set", o)]
    result = _invoke(str(TINY), *args, "--split", "eval")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0].startswith("eval split")
    assert result.stdout.splitlines()[1].startswith("texts: 5 ")


def test_eval_split_falls_back_to_the_held_out_fraction(tmp_path):
    args = ["--set", "data.eval=null", "--set", "data.eval_fraction=0.25", "--set", SMALL[0]]
    result = _invoke(str(TINY), *args, "--split", "eval")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1].startswith("texts: 3 ")


def test_an_empty_split_is_a_clear_error():
    result = _invoke(str(TINY), "--set", "data.eval=null", "--set", SMALL[0], "--split", "eval")
    assert result.exit_code == 1
    assert "no prompts" in result.stderr
    assert "Traceback" not in result.output


def test_recipe_problems_exit_with_code_2():
    result = _invoke(str(TINY), "--set", "alignment.word_window=-1")
    assert result.exit_code == 2
    assert "alignment.word_window" in result.stderr


def test_an_unknown_split_is_a_usage_error():
    result = _invoke(str(TINY), "--split", "test")
    assert result.exit_code == 2
    assert "train" in result.output and "eval" in result.output

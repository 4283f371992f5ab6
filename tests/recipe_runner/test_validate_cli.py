"""`recipe validate` on the command line: a rule broken by a --set names it, widths name the layer to change, and
a directory among the files is one more problem, not an abort."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from recipe_runner.cli import main

ROOT = Path(__file__).resolve().parents[2]
BROKEN = ROOT / "tests" / "assets" / "broken"
BASE = BROKEN / "base.yaml"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_a_rule_across_values_names_the_set_that_broke_it_beside_the_place_in_the_file() -> None:
    """The demo recipe counts in epochs and floors lr at 1e-4: a `--set` of steps or of a lower lr breaks a rule
    whose place is in the file, but whose cause is on the command line."""
    tiny = ROOT / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"
    steps = invoke("validate", str(tiny), "--set", "output.dir=runs/x", "--set", "stages.0.steps=4")
    assert steps.exit_code == 2
    assert steps.stderr.splitlines()[0].endswith(
        "stages[0]: give exactly one of `epochs` and `steps`: remove the other (set it to null where it is "
        "inherited) (with --set #2 (stages.0.steps=4))"
    )
    lower = invoke("validate", str(tiny), "--set", "stages.0.lr.student=1e-5")
    assert lower.exit_code == 2
    assert lower.stderr.splitlines()[0].endswith(
        "stages[0].min_lr.student: min_lr 0.0001 is above lr 1e-05 (with --set #1 (stages.0.lr.student=1e-5)): "
        "lower it, or set it to null (lr/10)"
    )


def test_a_stack_that_keeps_the_students_width_is_told_to_end_with_a_resizing_layer() -> None:
    result = invoke("validate", str(BASE), "--set", "bolt_on.layers=[{type: rms_norm}]")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].endswith(
        "bolt_on.layers[0]: bolt-on output width 48 must equal the teacher width 64 (student width 48); the layers "
        "keep the student's width; end the stack with {type: linear, out_dim: 64}"
    ), result.stderr
    # A transformer after the last out_dim sets the width: its dim must stay its input's, so a layer must follow.
    transformer = "{type: transformer, layers: 1, dim: 96, heads: 4, ffn_dim: 192}"
    layers = f"bolt_on.layers=[{{type: linear, out_dim: 96}}, {transformer}, {{type: rms_norm}}]"
    result = invoke("validate", str(BASE), "--set", layers)
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0].endswith(
        "bolt_on.layers[1].dim: bolt-on output width 96 must equal the teacher width 64 (student width 48); a "
        "transformer keeps the width it reads; end the stack with {type: linear, out_dim: 64} after it"
    ), result.stderr


def test_cli_validate_names_a_directory_among_its_files_and_checks_the_others(tmp_path) -> None:
    result = invoke("validate", str(BROKEN / "typo_key.yaml"), str(tmp_path))
    assert result.exit_code == 2
    assert f"{tmp_path.name}: <recipe>: is a directory, not a recipe file" in result.stderr  # (shown relative)
    assert "typo_key.yaml:" in result.stderr and "2 problems found." in result.stderr, result.stderr

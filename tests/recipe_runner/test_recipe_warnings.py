"""Values that are allowed but do nothing are said at their file:line by validate, plan and run, never refused."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from recipe_runner.cli import main
from recipe_runner.loader import load_recipe
from recipe_runner.recipe_warnings import recipe_warnings

TINY = Path(__file__).resolve().parents[2] / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"
SHOWN = "recipes/examples/t5_to_qwen_tiny.yaml"  # as the messages show it, relative to the repository root


def _said(*overrides: str) -> list[str]:
    return [str(warning) for warning in recipe_warnings(load_recipe(TINY, overrides))]


def test_freezing_the_student_on_the_command_line_names_its_unused_learning_rates_where_they_are_written(
    monkeypatch,
) -> None:
    monkeypatch.chdir(TINY.parents[2])
    lr, min_lr = (f"{SHOWN}:{number}:" for number in (39, 40))
    said = _said("stages.0.trainable=[bolt_on]")
    assert len(said) == 2
    assert said[0].startswith(lr) and "stages[0].lr.student: unused: this stage trains only bolt_on" in said[0]
    assert said[1].startswith(min_lr) and said[1].endswith("add student to trainable, or remove this value")


def test_a_value_given_on_the_command_line_is_placed_at_that_set() -> None:
    said, untrained = _said("stages.0.trainable=[student]", "stages.0.lr.bolt_on=null", "stages.0.min_lr.bolt_on=5e-5")
    assert said.startswith("--set #3 (stages.0.min_lr.bolt_on=5e-5): stages[0].min_lr.bolt_on: unused"), said
    assert "bolt_on: no stage trains these layers" in untrained


def test_a_warmup_as_long_as_a_stage_of_steps_is_said_and_one_shorter_is_not() -> None:
    [said] = _said("stages.0.epochs=null", "stages.0.steps=8", "stages.0.warmup_steps=8")
    assert said.endswith("warmup_steps: 8 is not below the stage's 8 steps: the learning rate never reaches lr")
    assert _said("stages.0.epochs=null", "stages.0.steps=9", "stages.0.warmup_steps=8") == []


def test_validate_and_plan_say_them_and_still_pass() -> None:
    args = [str(TINY), "--set", "stages.0.trainable=[bolt_on]"]
    validated = CliRunner().invoke(main, ["validate", *args])
    assert validated.exit_code == 0 and validated.stdout.endswith(": ok\n"), validated.output
    assert validated.stderr.count("warning: ") == 2 and "stages[0].lr.student: unused" in validated.stderr
    planned = CliRunner().invoke(main, ["plan", *args])
    assert planned.exit_code == 0, planned.output
    assert "stages[0].min_lr.student: unused" in planned.stdout and "t5_to_qwen_tiny.yaml:40:" in planned.stdout


def test_validate_says_them_beside_the_errors_of_a_recipe_whose_schema_holds(tmp_path) -> None:
    args = [str(TINY), "--set", "stages.0.trainable=[bolt_on]", "--set", f"data.train={tmp_path / 'missing.txt'}"]
    validated = CliRunner().invoke(main, ["validate", *args])
    assert validated.exit_code == 2 and ": ok" not in validated.stdout, validated.output
    assert validated.stderr.count("warning: ") == 2 and "stages[0].lr.student: unused" in validated.stderr
    assert "missing.txt" in validated.stderr and "1 problem found." in validated.stderr
    # A recipe the schema refuses has no values to weigh: its errors alone.
    broken = CliRunner().invoke(main, ["validate", *args, "--set", "stages.0.steps=-1"])
    assert broken.exit_code == 2 and "warning: " not in broken.stderr, broken.output


def test_a_bolt_on_rate_in_a_recipe_without_bolt_on_asks_only_for_its_removal() -> None:
    logits = TINY.with_name("qwen_logits_tiny.yaml")
    [said] = [str(w) for w in recipe_warnings(load_recipe(logits, ["stages.0.lr.bolt_on=1e-3"]))]
    assert said.endswith("stages[0].lr.bolt_on: unused: this recipe has no bolt-on layers; remove this value"), said


def test_a_part_trained_at_rate_0_and_a_bolt_on_no_stage_trains_are_said() -> None:
    said = _said("stages.0.trainable=[student]", "stages.0.lr={student: 0}", "stages.0.min_lr={student: 0}")
    assert said[0].endswith("stages[0].lr.student: 0: student is trained but never moves; to freeze it, take it out "
                            "of trainable (its optimizer state then takes no memory)")  # fmt: skip
    assert said[1].startswith(f"{SHOWN}:25:1: bolt_on: no stage trains these layers: they keep their initial")
    assert len(said) == 2


def test_a_recipe_that_extends_another_and_keeps_its_name_is_asked_for_one(tmp_path) -> None:
    child = tmp_path / "child.yaml"
    child.write_text(f"extends: {TINY}\nhardware: {{seed: 5}}\n")
    [said] = [str(w) for w in recipe_warnings(load_recipe(child))]
    assert said.startswith(f"{SHOWN}:4:1: recipe: this name, 't5_to_qwen_tiny', is inherited from the recipe this one")
    assert said.endswith("give child.yaml its own `recipe:` name")
    child.write_text(f"extends: {TINY}\nrecipe: child\n")
    assert recipe_warnings(load_recipe(child)) == []
    assert recipe_warnings(load_recipe(TINY, ["recipe=renamed"])) == []  # a --set name is this run's own


def test_settings_a_constant_schedule_or_a_recipe_without_eval_prompts_leaves_unused_are_said() -> None:
    said = _said("stages.0.schedule={type: constant}", "data.eval=null")
    assert [line.split(": ", 2)[1] for line in said] == [
        "stages[0].min_lr.student",
        "stages[0].min_lr.bolt_on",
        "output.eval_every_steps",
    ]
    assert said[0].endswith("unused: a constant schedule stays at lr after warmup")
    assert said[2].endswith("unused: no eval prompts (data.eval, data.eval_fraction), so nothing is evaluated")
    kept = _said("data.eval=null", "output.keep_best=true")[-1]
    assert kept.endswith("output.keep_best: unused: no eval prompts (data.eval, data.eval_fraction), so no `best` "
                         "checkpoint is kept")  # fmt: skip
    assert _said("data.eval=null", "data.eval_fraction=0.1") == []


def test_alignment_in_a_logits_recipe_of_one_tokenizer_is_said_and_of_two_is_not() -> None:
    logits = TINY.with_name("qwen_logits_tiny.yaml")
    [said] = [str(w) for w in recipe_warnings(load_recipe(logits, ["alignment={type: cross_tokenizer}"]))]
    assert "alignment: both models read one tokenizer (" in said
    assert said.endswith("remove it to compare every position's whole distribution")
    assert recipe_warnings(load_recipe(TINY.with_name("qwen_cross_vocab_tiny.yaml"))) == []


def test_a_run_of_steps_that_checkpoints_only_at_its_end_is_said() -> None:
    steps = ["stages.0.epochs=null", "stages.0.steps=50", "stages.0.warmup_steps=5", "output.save_every_minutes=null"]
    [said] = _said(*steps, "output.save_every_steps=50")
    assert "output.save_every_steps: 50 is not below the run's 50 steps, and save_every_minutes is null" in said
    assert _said(*steps, "output.save_every_steps=20") == []
    assert _said(*steps[:-1], "output.save_every_steps=50") == []  # the clock still saves


def test_fp32_precision_beside_a_model_dtype_left_at_its_bfloat16_default_is_said(tmp_path) -> None:
    base = TINY.parents[2] / "tests" / "assets" / "broken" / "base.yaml"
    unset = tmp_path / "fp32.yaml"  # the fixture without its dtypes, its paths made absolute
    unset.write_text(base.read_text().replace("  dtype: float32\n", "").replace("../../../", f"{TINY.parents[2]}/"))
    [teacher] = [str(w) for w in recipe_warnings(load_recipe(unset))]
    assert "hardware.precision: fp32, but teacher.dtype is left at its default bfloat16: the teacher still " in teacher
    assert teacher.endswith("or teacher.dtype: bfloat16 to keep it and not be told again")
    frozen = ["stages.0.trainable=[bolt_on]", "stages.0.lr={bolt_on: 1.0e-3}"]
    student = [str(w) for w in recipe_warnings(load_recipe(unset, frozen))][1]
    assert "student.dtype is left at its default bfloat16: the student (frozen or LoRA-adapted weights)" in student
    assert recipe_warnings(load_recipe(unset, ["teacher.dtype=bfloat16"])) == []  # written: meant
    assert recipe_warnings(load_recipe(unset, ["hardware.precision=bf16"])) == []

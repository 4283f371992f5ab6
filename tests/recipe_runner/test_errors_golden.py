"""Golden error messages: every broken fixture under tests/assets/broken/ reports exactly these problems.

Each fixture `extends` the valid tests/assets/broken/base.yaml (tiny inline configs, the repo's tiny
tokenizers and prompt files) and breaks one thing. A message is rendered as
`FILE:LINE:COL: field: message`, with FILE reduced to its name (or the `--set #N (...)` origin of an
override), `{broken}` standing for the absolute fixture directory and `{data}` for the repository's data/.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from transformers.activations import ACT2FN

from recipe_runner.cli import main
from recipe_runner.errors import Problem, RecipeError
from recipe_runner.loader import load_recipe

BROKEN = Path(__file__).resolve().parents[1] / "assets" / "broken"
BASE = BROKEN / "base.yaml"
DATA = BROKEN.parents[2] / "data"

HARDWARE_KEYS = (
    "attention, backend, batch_size, batch_tokens, checkpoint_min_tokens, compile, device, distributed, "
    "fused_kernels, grad_accum, gradient_checkpointing, "
    "num_workers, packed_sequences, precision, seed, trained_weights, vram_gb"
)
ACTIVATIONS = ", ".join(sorted(ACT2FN))
RECIPE_KEYS = "alignment, bolt_on, data, description, hardware, inference, output, recipe, stages, student, teacher"

# fixture file -> (--set overrides, expected problems in reported order)
GOLDEN: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "typo_key.yaml": (
        (),
        [
            "typo_key.yaml:4:3: hardware.batch_sise: unknown key 'batch_sise'; did you mean 'batch_size'? "
            f"(allowed: {HARDWARE_KEYS})"
        ],
    ),
    "unknown_type.yaml": (
        (),
        [
            "unknown_type.yaml:6:8: bolt_on.layers[1].type: unknown type 'linaer'; did you mean 'linear'? "
            "(known: linear, mlp, transformer, residual_mlp, rms_norm)"
        ],
    ),
    "misspelt_type_key.yaml": (
        (),
        [
            "misspelt_type_key.yaml:6:7: bolt_on.layers[1]: needs a `type:` key naming what this entry is (known: "
            "linear, mlp, transformer, residual_mlp, rms_norm); 'tpye' looks like a misspelt 'type'"
        ],
    ),
    "bad_literal.yaml": (
        (),
        [
            "bad_literal.yaml:4:3: hardware.precision: 'bf61' is not allowed; did you mean 'bf16'? "
            "(allowed: 'fp32', 'bf16' or 'fp16')"
        ],
    ),
    "wrong_value_type.yaml": (
        (),
        ["wrong_value_type.yaml:4:3: hardware.batch_size: expected an integer, got 'lots'"],
    ),
    "negative_weight.yaml": (
        (),
        ["negative_weight.yaml:10:37: stages[0].losses[1].weight: must be >= 0.0, got -0.5"],
    ),
    "zero_weights.yaml": (
        (),
        ["zero_weights.yaml:8:5: stages[0].losses: all loss weights are zero: nothing would train"],
    ),
    "width_mismatch.yaml": (
        (),
        [
            "width_mismatch.yaml:6:38: bolt_on.layers[1].out_dim: bolt-on output width 32 must equal the teacher "
            "width 64 (student width 48); set out_dim: 64 here, or end the stack with {type: linear, out_dim: 64}"
        ],
    ),
    "init_from_mismatch.yaml": (
        (),
        [
            "init_from_mismatch.yaml:6:24: bolt_on.layers[1].init_from: teacher.final_norm has width 64 but this "
            "layer's width is 32; place the rms_norm where the width equals the teacher's, or drop init_from"
        ],
    ),
    "transformer_dim.yaml": (
        (),
        [
            "transformer_dim.yaml:6:38: bolt_on.layers[1].dim: transformer width 40 does not match its input "
            "width 32 (from layer 0); put a linear layer with out_dim: 40 before it or set dim: 32"
        ],
    ),
    "heads_do_not_divide.yaml": (
        (),
        ["heads_do_not_divide.yaml:6:47: bolt_on.layers[1].heads: 5 heads do not divide dim 32"],
    ),
    "unknown_tier.yaml": (
        (),
        [
            "unknown_tier.yaml:12:23: stages[0].losses[1].on: tier 'split' is not computed; "
            "alignment.tiers is ['matched', 'sequence']: add 'split' there, or remove this loss"
        ],
    ),
    "min_lr_above_lr.yaml": (
        (),
        [
            "min_lr_above_lr.yaml:8:31: stages[0].min_lr.bolt_on: min_lr 0.002 is above lr 0.001: lower it, or set it "
            "to null (lr/10)"
        ],
    ),
    "checkpoint_threshold_without_checkpointing.yaml": (
        (),
        [
            "checkpoint_threshold_without_checkpointing.yaml:4:3: hardware.checkpoint_min_tokens: has no effect "
            "without gradient_checkpointing: true; set that or remove this"
        ],
    ),
    "batch_tokens_below_max_length.yaml": (
        (),
        [
            "batch_tokens_below_max_length.yaml:4:3: hardware.batch_tokens: 16 is below student.max_length 64: "
            "a prompt of that length would not fit a batch; raise it to at least 64 or lower student.max_length"
        ],
    ),
    "batch_tokens_without_effect.yaml": (
        (),
        [
            "batch_tokens_without_effect.yaml:5:3: hardware.batch_tokens: has no effect: batch_size 4 x "
            "student.max_length 64 = 256 tokens never exceeds it; raise batch_size (the prompt cap) to let "
            "short prompts fill the budget, or remove this"
        ],
    ),
    "stochastic_weights_fp32.yaml": (
        (),
        [
            "stochastic_weights_fp32.yaml:5:3: hardware.trained_weights: bf16_stochastic needs precision: bf16 "
            "(not fp32)"
        ],
    ),
    "missing_lr.yaml": (
        (),
        ["missing_lr.yaml:7:5: stages[0].lr: no learning rate for trainable part 'bolt_on'"],
    ),
    "missing_data.yaml": (
        (),
        ["missing_data.yaml:4:3: data.train: data file not found: {broken}/no_such_prompts.txt"],
    ),
    "remote_code.yaml": (
        (),
        [
            "remote_code.yaml:4:3: student.trust_remote_code: runs Python code shipped with "
            "{data}/tokenizers/tiny_qwen; read that code, then pass --trust-remote-code to allow it"
        ],
    ),
    "lora_targets.yaml": (
        (),
        [
            "lora_targets.yaml:9:7: stages[0].student_lora.target_modules: 'query' matches no module of "
            "Qwen3Model; its adaptable layers are named down_proj, embed_tokens, gate_proj, k_proj, o_proj, "
            "q_proj, up_proj, v_proj"
        ],
    ),
    "config_problems.yaml": (
        (),
        [
            "config_problems.yaml:5:48: student.config.num_hidden_layer: unknown key 'num_hidden_layer' for "
            "model_type 'qwen3'; did you mean 'num_hidden_layers'?",
            "config_problems.yaml:6:12: student.config.num_key_value_heads: 3 does not divide num_attention_heads 4 "
            "(grouped-query attention)",
            "config_problems.yaml:6:50: student.config.intermediate_size: must be > 0, got 0",
            "config_problems.yaml:8:12: teacher.config.feed_forward_proj: unknown activation 'gleu'; did you mean "
            f"'gelu'? (known: {ACTIVATIONS})",
        ],
    ),
    "not_finite.yaml": (
        (),
        [
            "not_finite.yaml:4:10: bolt_on.skip.scale: input should be a finite number",
            "not_finite.yaml:6:3: hardware.vram_gb: input should be a finite number",
        ],
    ),
    "output_dir_is_file.yaml": (
        (),
        ["output_dir_is_file.yaml:4:3: output.dir: {broken}/base.yaml is a file, not a directory: choose another path"],
    ),
    "null_restores_default.yaml": (
        (),
        [
            "null_restores_default.yaml:7:20: alignment.tiers[1]: 'sequnce' is not allowed; did you mean "
            "'sequence'? (allowed: 'matched', 'split', 'window' or 'sequence')"
        ],
    ),
    "duplicate_stage_names.yaml": (
        (),
        ["duplicate_stage_names.yaml:10:5: stages[1].name: stages[0] is also named 'distill'"],
    ),
    "unreadable_tokenizer.yaml": (
        (),
        [
            "unreadable_tokenizer.yaml:4:3: student.tokenizer: {broken}/base.yaml: not a tokenizers JSON file: "
            "expected value at line 1 column 1"
        ],
    ),
    "yes_no_for_a_number.yaml": (
        (),
        [
            "yes_no_for_a_number.yaml:4:3: hardware.grad_accum: expected an integer, got true",
            "yes_no_for_a_number.yaml:9:10: stages[0].lr.student: expected a number, got true",
        ],
    ),
    "date_as_name.yaml": (
        (),
        [
            "date_as_name.yaml:3:1: recipe: expected a string, got 2024-06-01 (YAML reads that as a date: quote it, "
            "'2024-06-01')"
        ],
    ),
    "nan_in_config.yaml": (
        (),
        [
            "nan_in_config.yaml:5:5: teacher.config.layer_norm_epsilon: nan is not a finite number; a config value "
            "must be one"
        ],
    ),
    "image_size.yaml": (
        (),
        ["image_size.yaml:5:3: inference.size: [63, 64]: width and height must be multiples of 16 from 16 to 4096"],
    ),
    "pipeline_width.yaml": (
        (),
        [
            "pipeline_width.yaml:7:43: inference.pipeline_config.transformer.joint_attention_dim: joint_attention_dim "
            "65 must equal the teacher width 64: the transformer reads text encoded by the teacher or by the "
            "distilled student"
        ],
    ),
    "eval_twice.yaml": (
        (),
        [
            "eval_twice.yaml:4:3: data.eval_fraction: has no effect while data.eval is set: give held-out prompts "
            "in one of the two, not both"
        ],
    ),
    "optimizer_settings.yaml": (
        (),
        [
            "optimizer_settings.yaml:8:38: stages[0].optimizer.betas[0]: must be < 1.0, got 1.5",
            "optimizer_settings.yaml:11:1: hardware: expected a mapping, got ['cpu'] (hardware: Precision, batch "
            "shape and backend.)",
        ],
    ),
    "student_layer_out_of_range.yaml": (
        (),
        [
            "student_layer_out_of_range.yaml:4:3: student.layer: layer 3 does not exist: the student has 2 layers, "
            "so its hidden states are -3..2 (0 the embeddings, -1 the last layer)"
        ],
    ),
    "vocab_below_tokenizer.yaml": (
        (),
        [
            "vocab_below_tokenizer.yaml:5:73: student.config.vocab_size: the student embedding has 1000 rows but its "
            "tokenizer has 1936 tokens: ids from 1000 up would index past it; set vocab_size to at least 1936 or "
            "use the model's own tokenizer"
        ],
    ),
    "teacher_not_t5.yaml": (
        (),
        [
            "teacher_not_t5.yaml:4:12: teacher.config.model_type: a t5_encoder teacher needs a T5 architecture "
            "(model_type t5), not 'bert'"
        ],
    ),
    "empty_output_dir.yaml": (
        (),
        ["empty_output_dir.yaml:4:3: output.dir: empty path: give a file or directory"],
    ),
    "extends_directory.yaml": (
        (),
        ["extends_directory.yaml:2:1: extends: '../broken' is a directory, not a recipe file"],
    ),
    "alias_bomb.yaml": (
        (),
        ["alias_bomb.yaml:7:1: e[7]: expands to more than 100000 values (nested aliases?)"],
    ),
    "cycle_a.yaml": (
        (),
        ["cycle_b.yaml:2:1: extends: extends cycle: cycle_a.yaml -> cycle_b.yaml -> cycle_a.yaml"],
    ),
    "cycle_b.yaml": (
        (),
        ["cycle_a.yaml:2:1: extends: extends cycle: cycle_b.yaml -> cycle_a.yaml -> cycle_b.yaml"],
    ),
    "missing_base.yaml": (
        (),
        [
            "missing_base.yaml:2:1: extends: base recipe 'no_such_base.yaml' not found "
            "(looked at {broken}/no_such_base.yaml)"
        ],
    ),
    "base.yaml": (
        ("stages.2.name=late", "hardware=", "recipe"),
        [
            "--set #1 (stages.2.name=late): stages[2]: no list item 2 (the list has 1):"
            + " to add one, set the list whole, --set 'stages=[...]' (`recipe show` prints its items)",
            "--set #3 (recipe): --set: expected KEY.PATH=VALUE, e.g. stages.0.lr.student=5e-4",
        ],
    ),
    "yaml_syntax.yaml": (
        (),
        [
            "yaml_syntax.yaml:3:11: <yaml>: YAML syntax error: the { opened here is never closed, or an entry lacks "
            "its comma (while parsing a flow mapping expected ',' or '}', but got ':')"
        ],
    ),
    "duplicate_key.yaml": (
        (),
        [
            "duplicate_key.yaml:5:3: <yaml>: key 'batch_size' appears twice in the same mapping (first given on line "
            "4): merge the two into one 'batch_size'"
        ],
    ),
    "model_and_config.yaml": (
        (),
        [
            "model_and_config.yaml:3:1: teacher: give only one of `model` and `config` "
            "(set `model: null` to replace an inherited one)"
        ],
    ),
    "epochs_and_steps.yaml": (
        (),
        [
            "epochs_and_steps.yaml:4:5: stages[0]: give exactly one of `epochs` and `steps`: remove the other (set "
            "it to null where it is inherited)"
        ],
    ),
    "many_problems.yaml": (
        (),
        [
            f"many_problems.yaml:3:1: stage: unknown key 'stage'; did you mean 'stages'? (allowed: {RECIPE_KEYS})",
            "many_problems.yaml:5:3: hardware.batch_size: must be > 0, got 0",
            "many_problems.yaml:6:3: hardware.precison: unknown key 'precison'; did you mean 'precision'? "
            f"(allowed: {HARDWARE_KEYS})",
            "many_problems.yaml:8:3: output.save_every_steps: expected an integer, got 'often'",
        ],
    ),
    "many_semantic_problems.yaml": (
        (),
        [
            "many_semantic_problems.yaml:4:3: data.eval: data file not found: {broken}/missing_eval.txt",
            "many_semantic_problems.yaml:9:5: stages[0].lr: no learning rate for trainable part 'bolt_on'",
            "many_semantic_problems.yaml:10:14: stages[0].min_lr.student: min_lr 0.001 is above lr 0.0001: lower it, "
            "or set it to null (lr/10)",
            "many_semantic_problems.yaml:11:5: stages[0].losses: all loss weights are zero: nothing would train",
            "many_semantic_problems.yaml:12:23: stages[0].losses[0].on: tier 'window' is not computed; "
            "alignment.tiers is ['matched', 'sequence', 'split']: add 'window' there, or remove this loss",
        ],
    ),
}


def render(problem: Problem) -> str:
    position = problem.position
    shown = Path(position.file).name if position.line else position.file
    where = f"{shown}:{position.line}:{position.col}" if position.line else shown
    return f"{where}: {problem.field}: {problem.message}"


def expected(lines: list[str]) -> list[str]:
    return [line.replace("{broken}", str(BROKEN)).replace("{data}", str(DATA)) for line in lines]


def test_every_broken_fixture_has_a_golden_case() -> None:
    fixtures = {file.name for file in BROKEN.glob("*.yaml")}
    assert fixtures == set(GOLDEN)
    assert len([name for name in GOLDEN if name != "base.yaml"]) >= 14


def test_base_is_valid() -> None:
    loaded = load_recipe(BASE)
    assert loaded.recipe.recipe == "broken_base"
    assert Path(loaded.recipe.teacher.tokenizer or "").is_dir()
    assert Path(loaded.recipe.data.train.path).is_file()


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_message(name: str) -> None:
    overrides, lines = GOLDEN[name]
    with pytest.raises(RecipeError) as exc:
        load_recipe(BROKEN / name, overrides)
    assert [render(p) for p in exc.value.problems] == expected(lines)


def test_every_message_has_line_and_column_except_overrides() -> None:
    for name, (overrides, _) in GOLDEN.items():
        with pytest.raises(RecipeError) as exc:
            load_recipe(BROKEN / name, overrides)
        for problem in exc.value.problems:
            assert problem.position.line > 0 or problem.position.file.startswith("--set #"), (name, problem)
            assert "Traceback" not in problem.message


def test_null_gives_a_field_that_cannot_be_null_its_default_and_stays_a_value_where_it_means_something() -> None:
    recipe = load_recipe(BASE, ["hardware.batch_size=null", "output.save_every_minutes=null"]).recipe
    assert recipe.hardware.batch_size == 16 and recipe.output.save_every_minutes is None


def test_schema_problems_are_reported_without_running_semantic_checks() -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(BROKEN / "many_problems.yaml", check=False)
    assert len(exc.value.problems) == 4


def test_semantic_problems_need_check() -> None:
    loaded = load_recipe(BROKEN / "many_semantic_problems.yaml", check=False)
    assert loaded.recipe.stages[0].losses[0].on == "window"


# --- the command line ------------------------------------------------------------------------------------------


def invoke(*args: str):
    return CliRunner().invoke(main, list(args))


def test_cli_validate_ok() -> None:
    result = invoke("validate", str(BASE))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"{BASE}: ok"
    assert result.stderr == ""


@pytest.mark.parametrize("name", ["typo_key.yaml", "width_mismatch.yaml", "yaml_syntax.yaml", "many_problems.yaml"])
def test_cli_validate_reports_problems_on_stderr_with_exit_code_2(name: str) -> None:
    result = invoke("validate", str(BROKEN / name))
    assert result.exit_code == 2
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = expected(GOLDEN[name][1])
    for line in lines:
        assert line in result.stderr
    assert result.stderr.rstrip().endswith(f"{len(lines)} problem{'s' if len(lines) != 1 else ''} found.")
    assert "ok" not in result.stdout


def test_cli_validate_several_files_in_one_call() -> None:
    result = invoke("validate", str(BASE), str(BROKEN / "typo_key.yaml"), str(BROKEN / "many_semantic_problems.yaml"))
    assert result.exit_code == 2
    assert f"{BASE}: ok" in result.stdout
    for line in expected(GOLDEN["typo_key.yaml"][1] + GOLDEN["many_semantic_problems.yaml"][1]):
        assert line in result.stderr
    assert "6 problems found." in result.stderr
    assert "Traceback" not in result.output


def test_cli_validate_several_valid_files() -> None:
    result = invoke("validate", str(BASE), str(BASE))
    assert result.exit_code == 0, result.output
    assert result.stdout.count(": ok") == 2


def test_cli_validate_with_bad_override() -> None:
    result = invoke("validate", str(BASE), "--set", "stages.0.lr.student=-1")
    assert result.exit_code == 2
    assert "--set #1 (stages.0.lr.student=-1): stages[0].lr.student: must be >= 0.0, got -1" in result.stderr


def test_cli_validate_missing_file_exits_2() -> None:
    result = invoke("validate", str(BROKEN / "no_such_recipe.yaml"))
    assert result.exit_code == 2
    assert "no_such_recipe.yaml: <recipe>: file not found" in result.stderr
    assert "Traceback" not in result.output


def test_cli_show_reports_problems_with_exit_code_2() -> None:
    result = invoke("show", str(BROKEN / "typo_key.yaml"))
    assert result.exit_code == 2
    assert expected(GOLDEN["typo_key.yaml"][1])[0] in result.stderr


def test_unreadable_inline_config_is_one_line_at_the_config() -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(BASE, ["teacher.config.d_model=true"])
    problem = exc.value.problems[0]
    assert len(exc.value.problems) == 1
    assert render(problem).startswith("base.yaml:8:3: teacher.config: cannot read the architecture: ")
    assert "d_model" in problem.message
    assert "\n" not in problem.message

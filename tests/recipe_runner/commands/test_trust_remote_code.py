"""A shared recipe or export that says `trust_remote_code: true` runs no code unless the person running the
command passes --trust-remote-code: every verb that reads models refuses first, at the field's position."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from recipe_runner.cli import main
from recipe_runner.errors import RecipeError
from recipe_runner.loader import load_recipe

ASSETS = Path(__file__).resolve().parents[2] / "assets"
BASE = ASSETS / "broken" / "base.yaml"
TINY_CHROMA = ASSETS.parent / "components" / "inference" / "assets" / "tiny_chroma.yaml"
VERBS = ["validate", "plan", "run", "cache", "export", "align-report", "bench", "infer"]


@pytest.fixture
def evil(tmp_path: Path) -> Path:
    """A model directory whose config maps to Python code that leaves a marker file when it is imported."""
    model = tmp_path / "evil"
    model.mkdir()
    marker = tmp_path / "code_ran"
    config = {"model_type": "evil", "hidden_size": 48, "auto_map": {"AutoConfig": "evil.EvilConfig"}}
    (model / "config.json").write_text(json.dumps(config))
    (model / "evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig\n\n\n"
        "class EvilConfig(PretrainedConfig):\n    model_type = 'evil'\n"
    )
    return model


def _recipe(tmp_path: Path, body: str, name: str = "shared.yaml") -> Path:
    file = tmp_path / name
    file.write_text(body)
    return file


def _evil_recipe(tmp_path: Path) -> Path:
    return _recipe(
        tmp_path,
        f"extends: {BASE}\nstudent:\n  config: null\n  model: ./evil\n  trust_remote_code: true\n"
        f"output:\n  dir: {tmp_path / 'run'}\n",
    )


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_refuses_remote_code_without_the_flag(evil: Path, tmp_path: Path, verb: str) -> None:
    extra = ["--prompt", "cat"] if verb == "infer" else []
    result = CliRunner().invoke(main, [verb, str(_evil_recipe(tmp_path)), *extra])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert (
        f"shared.yaml:5:3: student.trust_remote_code: runs Python code shipped with {evil}; read that code, "
        "then pass --trust-remote-code to allow it"
    ) in result.stderr
    assert not (tmp_path / "code_ran").exists(), "the model's code ran"


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_takes_the_flag(verb: str) -> None:
    result = CliRunner().invoke(main, [verb, "--help"])
    assert "--trust-remote-code" in result.stdout


def test_a_base_recipe_asking_for_remote_code_is_refused_at_its_own_line(evil: Path, tmp_path: Path) -> None:
    base = _recipe(tmp_path, f"extends: {BASE}\nstudent:\n  config: null\n  model: ./evil\n  trust_remote_code: true\n")
    child = _recipe(tmp_path, "extends: shared.yaml\nrecipe: innocent_looking\n", "child.yaml")
    with pytest.raises(RecipeError) as exc:
        load_recipe(child)
    [problem] = exc.value.problems
    assert (problem.position.file, problem.position.line, problem.field) == (str(base), 5, "student.trust_remote_code")
    assert not (tmp_path / "code_ran").exists()


def test_an_override_asking_for_remote_code_is_refused_at_the_override() -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(BASE, ["teacher.trust_remote_code=true"])
    [problem] = exc.value.problems
    assert problem.position.file == "--set #1 (teacher.trust_remote_code=true)"
    assert "pass --trust-remote-code" in problem.message


def test_other_problems_are_still_reported_beside_the_refusal(evil: Path, tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as exc:
        load_recipe(_evil_recipe(tmp_path), ["stages.0.lr={}"])
    assert {problem.field for problem in exc.value.problems} == {"student.trust_remote_code", "stages[0].lr"}


def test_with_the_flag_the_recipe_setting_takes_effect(tmp_path: Path) -> None:
    """A model directory without code: the flag only lets the recipe's own setting through."""
    from transformers import Qwen3Config, Qwen3Model

    model = tmp_path / "plain"
    Qwen3Model(Qwen3Config(
        hidden_size=48, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=12,
        intermediate_size=96, vocab_size=2000,
    )).save_pretrained(model)  # fmt: skip
    recipe = _recipe(
        tmp_path, f"extends: {BASE}\nstudent:\n  config: null\n  model: ./plain\n  trust_remote_code: true\n"
    )
    refused = CliRunner().invoke(main, ["validate", str(recipe)])
    assert refused.exit_code == 2 and "student.trust_remote_code" in refused.stderr
    allowed = CliRunner().invoke(main, ["validate", str(recipe), "--trust-remote-code"])
    assert allowed.exit_code == 0, allowed.output
    assert load_recipe(recipe, allow_remote_code=True).recipe.student.trust_remote_code is True


def test_an_export_asking_for_remote_code_is_refused_without_the_flag(tmp_path: Path) -> None:
    from components.bolt_on.stack import build_bolt_on
    from components.export import export_encoder
    from components.models import build_model, load_tokenizer

    recipe = load_recipe(TINY_CHROMA, [f"output.dir={tmp_path}"]).recipe
    export = tmp_path / "export"
    student = build_model(recipe.student, "student")
    export_encoder(export, recipe, student, build_bolt_on(recipe.bolt_on, 32, 64), load_tokenizer(recipe.student))
    manifest = json.loads((export / "encoder.json").read_text())
    manifest["teacher"]["trust_remote_code"] = True
    (export / "encoder.json").write_text(json.dumps(manifest))
    args = ["infer", "--checkpoint", str(export), "--prompt", "cat", "--out", str(tmp_path / "cat.png")]

    refused = CliRunner().invoke(main, [*args, "--encoder", "t5"])
    assert refused.exit_code == 1, refused.output
    assert f"error: the teacher in {export / 'encoder.json'} runs Python code shipped with" in refused.stderr
    assert "pass --trust-remote-code to allow it" in refused.stderr
    assert not (tmp_path / "cat.png").exists()

    allowed = CliRunner().invoke(main, [*args, "--encoder", "t5", "--trust-remote-code"])
    assert allowed.exit_code == 0, allowed.output
    assert (tmp_path / "cat.png").is_file()

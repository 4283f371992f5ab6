"""Every verb reports a missing model, tokenizer or checkpoint as one `error:` line with what to do, exit code 1."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from recipe_runner.cli import main

REAL = Path(__file__).resolve().parents[3] / "recipes" / "t5_to_qwen.yaml"


@pytest.mark.parametrize(
    ("verb", "fragment"),
    [
        (
            "run",
            "the run needs what this machine has not downloaded: teacher.model 'google/t5-v1_1-xxl', student.model "
            "'Qwen/Qwen3-Embedding-0.6B'; fetch them with `hf download google/t5-v1_1-xxl && hf download "
            "Qwen/Qwen3-Embedding-0.6B`",
        ),
        ("cache", "recipe cache needs what this machine has not downloaded: teacher.model 'google/t5-v1_1-xxl';"),
        ("align-report", "align-report needs what this machine has not downloaded: student.model 'Qwen/Qwen3-Emb"),
        ("export", "no step checkpoint"),
    ],
)
def test_missing_weights_or_checkpoints_are_one_line_not_a_traceback(verb, fragment, tmp_path, monkeypatch):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # `run` builds its own; earlier tests left theirs
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty hub cache, whatever this machine holds
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    sets = ["--set", f"output.dir={tmp_path / 'run'}", "--set", f"teacher.cache.dir={tmp_path / 'cache'}"]
    result = CliRunner().invoke(main, [verb, str(REAL), *sets])
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), "no traceback"
    assert result.stderr.startswith("error: ") and fragment in result.stderr, result.stderr
    assert "Traceback" not in result.output


TINY = REAL.parent / "examples" / "t5_to_qwen_tiny.yaml"


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("verb", ["run", "cache", "bench"])
def test_asking_for_cuda_without_one_is_one_line(verb, tmp_path):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    sets = ["--set", "hardware.device=cuda", "--set", f"output.dir={tmp_path / 'run'}"]
    sets += ["--set", f"teacher.cache.dir={tmp_path / 'cache'}", *(["--small"] if verb == "bench" else [])]
    result = CliRunner().invoke(main, [verb, str(TINY), *sets])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "hardware.device is cuda but no CUDA device is visible" in result.stderr


@pytest.mark.parametrize("verb", ["run", "cache"])
def test_a_data_file_that_is_not_utf8_is_one_problem_at_the_field(verb, tmp_path):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a\n\xff\n")
    sets = ["--set", f"data.train={bad}", "--set", f"output.dir={tmp_path / 'run'}"]
    result = CliRunner().invoke(main, [verb, str(TINY), *sets, "--set", f"teacher.cache.dir={tmp_path / 'cache'}"])
    assert result.exit_code == 2, result.output  # found by the recipe's checks, before any model loads
    assert f"data.train: {bad}:2: not UTF-8 (byte 0xff at byte offset 2): save it as UTF-8\n" in result.stderr
    assert "Traceback" not in result.output


def test_ctrl_c_before_a_verb_handles_it_exits_130(monkeypatch):
    import recipe_runner.loader

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recipe_runner.loader, "load_recipe", interrupted)
    result = CliRunner().invoke(main, ["validate", "any.yaml"])
    assert result.exit_code == 130, result.output
    assert "interrupted; every file is written under a temporary name" in result.stderr
    assert "Aborted" not in result.output


@pytest.mark.parametrize(("verb", "field"), [("run", "output.dir"), ("cache", "teacher.cache.dir")])
def test_a_place_under_a_file_is_one_problem_at_the_field(verb, field, tmp_path):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    (tmp_path / "a_file").write_text("mine")
    blocked = tmp_path / "a_file" / "inside"  # under a file: NotADirectoryError wherever it is created
    sets = {"output.dir": tmp_path / "run", "teacher.cache.dir": tmp_path / "cache", field: blocked}
    args = [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]
    result = CliRunner().invoke(main, [verb, str(TINY), *args])
    assert result.exit_code == 2, result.output  # found by the recipe's checks, before any model loads
    assert isinstance(result.exception, SystemExit), "no traceback"
    assert f"{field}: {tmp_path / 'a_file'} is a file, not a directory: choose another path" in result.stderr
    assert (tmp_path / "a_file").read_text() == "mine"


@pytest.mark.parametrize("verb", ["validate", "plan"])
def test_validate_and_plan_pass_and_note_what_a_run_would_have_to_download(verb, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    result = CliRunner().invoke(main, [verb, str(REAL)])
    assert result.exit_code == 0, result.output
    assert result.stderr == (
        "note: not downloaded on this machine yet: teacher.model 'google/t5-v1_1-xxl', student.model "
        "'Qwen/Qwen3-Embedding-0.6B'; `recipe run` needs them and never downloads: hf download google/t5-v1_1-xxl "
        "&& hf download Qwen/Qwen3-Embedding-0.6B\n"
    )
    assert CliRunner().invoke(main, [verb, str(TINY)]).stderr == "", "inline configs and shipped tokenizers"
    if verb == "validate":  # among several files, each note says whose it is
        several = CliRunner().invoke(main, [verb, str(TINY), str(REAL)])
        assert several.stderr.startswith(f"{REAL}: note: not downloaded on this machine yet:")

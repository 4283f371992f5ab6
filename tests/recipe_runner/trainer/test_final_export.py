"""The export a run writes at its end: never over one a person chose, and no partial copy left behind."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from components.export.causal_lm import read_causal_lm_manifest
from recipe_runner.cli import main
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.loop import Trainer

ROOT = Path(__file__).parents[3]
TINY = ROOT / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"
PROMPTS_DIR = ROOT / "data" / "prompts"


def _overrides(out: Path) -> list[str]:
    return [
        f"output.dir={out}",
        "teacher.cache=null",
        f"data.train={{path: {PROMPTS_DIR / 'train.txt'}, limit: 8}}",
        "data.eval=null",
        "hardware.batch_size=4",
        "stages.0.steps=3",
        "stages.0.epochs=null",
        "stages.0.warmup_steps=0",
        "output.save_every_steps=2",
    ]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 3-step run, trained once; each test works on a copy."""
    out = tmp_path_factory.mktemp("finished") / "run"
    Trainer(load_recipe(TINY, _overrides(out)).recipe, progress=False).run()
    return out


def _copy(finished: Path, tmp_path: Path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def test_a_finished_run_resumed_keeps_the_export_a_person_wrote_from_another_checkpoint(finished, tmp_path, capsys):
    out = _copy(finished, tmp_path)
    overrides = _overrides(out)
    assert json.loads((out / "export" / "encoder.json").read_text())["checkpoint"] is None, "a run's own export"

    chosen = out / "checkpoints" / "step-00000002"
    sets = [arg for override in overrides for arg in ("--set", override)]
    result = CliRunner().invoke(main, ["export", str(TINY), *sets, "--checkpoint", str(chosen)])
    assert result.exit_code == 0, result.output
    assert json.loads((out / "export" / "encoder.json").read_text())["checkpoint"] == str(chosen.resolve())
    theirs = (out / "export" / "bolt_on.safetensors").read_bytes()

    capsys.readouterr()
    summary = Trainer(load_recipe(TINY, overrides).recipe, resume=True, progress=False).run()  # `make demo` again
    assert summary.export_dir is None
    assert (out / "export" / "bolt_on.safetensors").read_bytes() == theirs
    said = capsys.readouterr().err
    assert f"note: kept {out / 'export'}, the export of {chosen.resolve()} written by `recipe export`" in said


def test_a_copy_a_killed_export_left_is_removed_when_the_run_is_resumed_at_once(finished, tmp_path):
    """Only copies over a minute old were taken for dead ones; a run resumed at once, which exports no more once
    finished, left its copy (as large as the export) for good."""
    out = _copy(finished, tmp_path)
    partial = out / ".export.k2j3h4g5.tmp"
    shutil.copytree(out / "export", partial)
    (out / ".export.k2j3h4g5.tmp.lock").touch()  # just made, and no process holds it: its writer was killed
    Trainer(load_recipe(TINY, _overrides(out)).recipe, resume=True, progress=False).run()
    assert not partial.exists() and not (out / ".export.k2j3h4g5.tmp.lock").exists()


def test_a_causal_lm_export_hidden_by_a_crash_mid_swap_is_put_back_when_read(tmp_path):
    export = tmp_path / "export"
    hidden = tmp_path / ".export.old"
    hidden.mkdir()
    (hidden / "distilled.json").write_text("{}")
    read_causal_lm_manifest(export)  # what `recipe infer` reads first: it said "no export" and offered to write one
    assert (export / "distilled.json").is_file() and not hidden.exists()

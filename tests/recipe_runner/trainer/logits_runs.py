"""Tiny runs of the logits example recipe, shared by its training tests."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

from short_runs import constant_run

from recipe_runner.loader import load_recipe
from recipe_runner.trainer.loop import Trainer

REPO = Path(__file__).resolve().parents[3]
RECIPE = REPO / "recipes" / "examples" / "qwen_logits_tiny.yaml"
# A teacher the student can represent exactly (its own architecture, other random weights), with peaked outputs.
TWIN = (
    "teacher.config={model_type: qwen2, hidden_size: 32, num_hidden_layers: 2, num_attention_heads: 4, "
    "num_key_value_heads: 2, intermediate_size: 64, vocab_size: 2000, initializer_range: 0.2}"
)


def short(run_dir: Path, steps: int, *extra: str) -> list[str]:
    return constant_run([f"output.dir={run_dir}"], steps, *extra)


def train(overrides: list[str], resume: bool = False, recipe: Path = RECIPE):
    return Trainer(load_recipe(recipe, overrides).recipe, resume=resume, progress=False).run()


def evals(run_dir: Path) -> list[dict]:
    """The evaluation rows of a run's metrics.jsonl."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row for row in rows if "eval/forward_kl" in row]


def killed_and_resumed(run_dir: Path, overrides: list[str], recipe: Path = RECIPE) -> None:
    """Resume `run_dir` as if killed after its second-to-last checkpoint: the last one, `best` (written by the
    evaluation at the end) and the export go first, or the run would resume at its end and train nothing."""
    checkpoints = run_dir / "checkpoints"
    steps = sorted(checkpoints.glob("step-*"))
    assert len(steps) >= 2, "the run needs a checkpoint before its last to resume from"
    for folder in (steps[-1], checkpoints / "best", run_dir / "export"):
        shutil.rmtree(folder, ignore_errors=folder.name == "best")
    said = io.StringIO()
    with contextlib.redirect_stderr(said):
        train(overrides, resume=True, recipe=recipe)
    # Tiny runs repeat exactly: one started over from step 0 would end with the same weights.
    assert f"resuming from {steps[-2]} (" in said.getvalue(), said.getvalue()[-2000:]

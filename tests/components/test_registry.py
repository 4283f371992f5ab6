"""Loss types from installed packages: a package found through its entry points adds a `type:` that recipes
validate, place their mistakes in, and train with; a package that fails is named only where its type is used."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from components.registry import installed_types
from recipe_runner.cli import main
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.loop import Trainer

SMOOTH = '''
from typing import Literal

import torch
from pydantic import Field

from torch import nn

from components.registry import BoltOnLayerType, DivergenceType, VectorLossType
from schemas.bolt_on import BoltOnLayerSpec
from schemas.stages import DivergenceLoss, TierLoss


class SmoothL2Loss(TierLoss):
    """Squared distance, scaled."""

    type: Literal["smooth_l2"] = Field(description="Loss kind.")
    alpha: float = Field(default=0.5, gt=0, description="Scale of the squared distance.")


def smooth_l2(spec, student, teacher):
    return spec.alpha * (student - teacher).pow(2).mean(-1)


SMOOTH_L2 = VectorLossType(schema=SmoothL2Loss, pair_loss=smooth_l2)
NOT_A_TYPE = 3


class TotalVariationLoss(DivergenceLoss):
    """Total variation distance between the next-token distributions."""

    type: Literal["total_variation"] = Field(description="Loss kind.")


def total_variation(spec, student, teacher):
    return 0.5 * (teacher.exp() - student.exp()).abs().sum(-1)


TOTAL_VARIATION = DivergenceType(schema=TotalVariationLoss, divergence=total_variation)
WRONG_KIND = DivergenceType(schema=SmoothL2Loss, divergence=total_variation)


class GatedLayer(BoltOnLayerSpec):
    """x + sigmoid(gate) * linear(x): a width-keeping refinement that starts as the identity."""

    type: Literal["gated"] = Field(description="Layer kind.")
    start: float = Field(default=-4.0, description="Initial gate logit.")


class Gated(nn.Module):
    def __init__(self, spec, width):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.gate = nn.Parameter(torch.full((width,), spec.start))

    def forward(self, hidden, mask):
        return hidden + torch.sigmoid(self.gate) * self.linear(hidden)


GATED = BoltOnLayerType(schema=GatedLayer, module=Gated, out_width=lambda spec, width: width)
'''


@pytest.fixture
def install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`install(points)` makes a package holding the module above, with these `recipe.components` entry points,
    importable and found as installed (a dist-info folder on sys.path), for this test only."""

    def _install(points: dict[str, str]) -> None:
        site = tmp_path / "site"
        (site / "demo_losses").mkdir(parents=True)
        (site / "demo_losses" / "__init__.py").write_text(SMOOTH)
        info = site / "demo_losses-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: demo-losses\nVersion: 0.1\n")
        lines = "".join(f"{name} = {value}\n" for name, value in points.items())
        (info / "entry_points.txt").write_text(f"[recipe.components]\n{lines}")
        monkeypatch.syspath_prepend(str(site))
        installed_types.cache_clear()

    yield _install
    installed_types.cache_clear()


def _validate(recipe: Path, *overrides: str) -> tuple[int, str]:
    args = ["validate", str(recipe)] + [item for override in overrides for item in ("--set", override)]
    result = CliRunner().invoke(main, args)
    return result.exit_code, result.output


def test_a_packages_loss_validates_is_in_the_schema_and_trains(install, tiny_recipe_path, tiny_overrides) -> None:
    install({"smooth_l2": "demo_losses:SMOOTH_L2"})
    added = "stages.0.losses=[{type: smooth_l2, on: matched, alpha: 2.0}, {type: cosine, on: matched}]"
    code, out = _validate(tiny_recipe_path, added)
    assert code == 0, out
    schema = CliRunner().invoke(main, ["schema"]).output
    assert "smooth_l2" in schema and "Scale of the squared distance." in schema
    overrides = [*tiny_overrides, added, "stages.0.epochs=null", "stages.0.steps=20", "output.eval_every_steps=10"]
    Trainer(load_recipe(tiny_recipe_path, overrides).recipe, progress=False).run()
    rows = [json.loads(line) for line in (Path(tiny_overrides[0].split("=", 1)[1]) / "metrics.jsonl").open()]
    evals = [row["eval/terms/matched/smooth_l2"] for row in rows if "eval/terms/matched/smooth_l2" in row]
    assert len(evals) >= 2 and evals[-1] < evals[0]


def test_a_packages_loss_has_its_mistakes_placed_and_its_name_offered(install, tiny_recipe_path) -> None:
    install({"smooth_l2": "demo_losses:SMOOTH_L2"})
    code, out = _validate(tiny_recipe_path, "stages.0.losses.0={type: smooth_l2, on: matched, alpha: -1}")
    assert code == 2 and "stages[0].losses[0].alpha: must be > 0" in out
    code, out = _validate(tiny_recipe_path, "stages.0.losses.0={type: smoth_l2, on: matched}")
    assert code == 2 and "unknown type 'smoth_l2'; did you mean 'smooth_l2'?" in out
    # A typo elsewhere: the stage holding the package's loss is still checked on its own, and passes.
    code, out = _validate(tiny_recipe_path, "stages.0.losses.0={type: smooth_l2, on: matched}", "hardware.batch_sise=3")
    assert code == 2 and "1 problem found" in out and "hardware.batch_sise: unknown key" in out
    loss, no_lr = "stages.0.losses.0={type: smooth_l2, on: matched}", "stages.0.lr={}"
    code, out = _validate(tiny_recipe_path, loss, no_lr, "hardware.batch_sise=3")
    assert "stages[0].lr: no learning rate for trainable part 'student'" in out and "3 problems found" in out


def test_a_broken_package_is_named_where_its_type_is_used_and_nowhere_else(install, tiny_recipe_path) -> None:
    install(
        {
            "missing_module": "demo_losses_gone:LOSS",
            "not_a_type": "demo_losses:NOT_A_TYPE",
            "huber": "demo_losses:SMOOTH_L2",
            "other_name": "demo_losses:SMOOTH_L2",
        }
    )
    assert _validate(tiny_recipe_path)[0] == 0  # the recipe uses none of them
    broken = installed_types().broken
    assert "demo-losses (demo_losses_gone:LOSS) does not import: ModuleNotFoundError" in broken["missing_module"]
    assert "it is of type int, not one of components.registry's VectorLossType, DivergenceType" in broken["not_a_type"]
    assert "'huber' is already a type" in broken["huber"]
    assert "its schema's `type` must be Literal['other_name']" in broken["other_name"]
    code, out = _validate(tiny_recipe_path, "stages.0.losses.0={type: missing_module, on: matched}")
    assert code == 2 and "unknown type 'missing_module'" in out
    assert "the installed package demo-losses (demo_losses_gone:LOSS) does not import" in out
    assert "fix or reinstall it" in out and "Traceback" not in out


def test_a_packages_divergence_trains_a_logits_student_on_one_and_on_two_vocabularies(install, tmp_path) -> None:
    install({"total_variation": "demo_losses:TOTAL_VARIATION"})
    examples = Path(__file__).resolve().parents[2] / "recipes" / "examples"
    added = "stages.0.losses=[{type: total_variation, temperature: 2.0}, {type: cross_entropy, weight: 0.1}]"
    for name in ("qwen_logits_tiny.yaml", "qwen_cross_vocab_tiny.yaml"):
        run_dir = tmp_path / name
        steps = ["stages.0.epochs=null", "stages.0.steps=12", "output.eval_every_steps=12"]
        overrides = [f"output.dir={run_dir}", added, *steps]
        if name == "qwen_cross_vocab_tiny.yaml":  # a divergence across two vocabularies needs uld or a shared id
            overrides[1] = added.replace("[", "[{type: uld}, ")
        Trainer(load_recipe(examples / name, overrides).recipe, progress=False).run()
        rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").open()]
        terms = [row["eval/terms/total_variation"] for row in rows if "eval/terms/total_variation" in row]
        assert len(terms) == 2 and 0 < terms[-1] < terms[0], name
    code, out = _validate(examples / "t5_to_qwen_tiny.yaml", "stages.0.losses.0={type: total_variation}")
    assert code == 2 and "'total_variation' is not a loss of the embedding family" in out


def test_a_kind_whose_schema_extends_the_other_base_is_refused(install) -> None:
    install({"smooth_l2": "demo_losses:WRONG_KIND"})
    reason = installed_types().broken["smooth_l2"]
    assert "the schema of a DivergenceType must be a subclass of schemas.stages.DivergenceLoss" in reason


def test_a_packages_bolt_on_layer_trains_exports_and_loads_only_where_installed(
    install, tiny_recipe_path, tiny_overrides, tmp_path, monkeypatch
) -> None:
    from components.export import DistilledEncoder
    from components.export.distilled_encoder import ExportError

    install({"gated": "demo_losses:GATED"})
    layers = "bolt_on.layers=[{type: linear, out_dim: 64}, {type: gated, start: -2.0}, {type: rms_norm}]"
    overrides = [*tiny_overrides, layers, "stages.0.epochs=null"]
    overrides += ["stages.0.steps=6", "output.eval_every_steps=1000"]
    code, out = _validate(tiny_recipe_path, *overrides)
    assert code == 0, out
    args = ["plan", str(tiny_recipe_path)] + [item for override in overrides for item in ("--set", override)]
    planned = CliRunner().invoke(main, args)
    assert planned.exit_code == 0 and "gated" in planned.output, planned.output  # built on the meta device
    code, out = _validate(tiny_recipe_path, *overrides, "hardware.packed_sequences=true")
    assert code == 2 and "bolt_on.layers[1] (gated, from a package) does not take packed batches" in out
    Trainer(load_recipe(tiny_recipe_path, overrides).recipe, progress=False).run()
    export = tmp_path / "run" / "export"
    encoder = DistilledEncoder.load(export)
    assert encoder.manifest.bolt_on.layers[1].start == -2.0
    embeddings, mask = encoder.encode(["a red fox"])
    assert embeddings.shape[-1] == 64 and torch.isfinite(embeddings).all() and mask.any()
    monkeypatch.delitem(installed_types().types, "gated")  # as on a machine without the package
    with pytest.raises(ExportError, match=r"type 'gated' is neither built in nor added by an installed package"):
        DistilledEncoder.load(export)


def test_a_fresh_recipe_process_finds_an_installed_package(install, tiny_recipe_path, tmp_path) -> None:
    """No cache clearing, no monkeypatching: the console script as a person runs it, with the package on its path."""
    import os
    import subprocess
    import sys

    install({"smooth_l2": "demo_losses:SMOOTH_L2"})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")])}
    loss = "stages.0.losses=[{type: smooth_l2, on: matched, alpha: 2.0}]"
    args = [sys.executable, "-m", "recipe_runner.cli", "validate", str(tiny_recipe_path), "--set", loss]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    del env["PYTHONPATH"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 2 and "unknown type 'smooth_l2'" in done.stdout + done.stderr


def test_without_packages_recipes_are_validated_against_the_built_in_schema_itself() -> None:
    from components.registry import InstalledTypes, recipe_class
    from schemas import Recipe

    installed_types.cache_clear()  # this test environment installs no package with recipe.components
    assert installed_types() == InstalledTypes() and recipe_class() is Recipe

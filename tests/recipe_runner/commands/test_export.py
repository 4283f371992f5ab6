"""`recipe export` after a 3-step tiny run: the final checkpoint by default, --checkpoint/--out, LoRA merge, errors."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from components.export import DistilledEncoder
from recipe_runner.cli import main
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.loop import Trainer

ROOT = Path(__file__).parents[3]
TINY = ROOT / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"
PROMPTS_DIR = ROOT / "data" / "prompts"
Usage = namedtuple("Usage", "total used free")
PROMPTS = ["a red fox in the snow", "cat", "an old lighthouse at dusk, oil painting"]


def _overrides(out: Path, *extra: str) -> list[str]:
    return [
        f"output.dir={out}",
        "teacher.cache=null",
        f"data.train={{path: {PROMPTS_DIR / 'train.txt'}, limit: 8}}",
        f"data.eval={{path: {PROMPTS_DIR / 'eval.txt'}, limit: 4}}",
        "hardware.batch_size=4",
        "stages.0.steps=3",
        "stages.0.epochs=null",
        "stages.0.warmup_steps=0",
        "output.save_every_steps=2",
        *extra,
    ]


def _train(out: Path, *extra: str) -> tuple[list[str], tuple[torch.Tensor, torch.Tensor]]:
    """A 3-step run; returns its overrides and what its own export encodes, then removes that export."""
    overrides = _overrides(out, *extra)
    Trainer(load_recipe(TINY, overrides).recipe, progress=False).run()
    embeds = DistilledEncoder.load(out / "export").encode(PROMPTS)
    shutil.rmtree(out / "export")
    return overrides, embeds


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "run"
    overrides, embeds = _train(out)
    return out, overrides, embeds


def _export(overrides: list[str], *args: str):
    sets = [arg for override in overrides for arg in ("--set", override)]
    return CliRunner().invoke(main, ["export", str(TINY), *sets, *args])


def test_exports_the_final_checkpoint_by_default_as_run_does(trained):
    out, overrides, (expected, expected_mask) = trained
    assert not (out / "export").exists()

    result = _export(overrides)
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert str(out / "checkpoints" / "step-00000003") in result.stdout

    embeds, mask = DistilledEncoder.load(out / "export").encode(PROMPTS)
    assert embeds.shape[-1] == 64 and embeds.shape[:2] == mask.shape
    assert mask.dtype == torch.bool
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(embeds, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_scheduler_stop_or_hangup_mid_export_leaves_no_temporary_copy(trained, tmp_path, monkeypatch, signum):
    import components.export.distilled_encoder as distilled_encoder

    if signal.getsignal(signum) is signal.SIG_IGN:
        pytest.skip("started under nohup: a hangup is ignored, as it should be")
    out, overrides, _ = trained
    original = distilled_encoder.save_model

    def stopped_while_writing(*args, **kwargs):
        original(*args, **kwargs)
        os.kill(os.getpid(), signum)  # by default these end the process on the spot, skipping every cleanup

    monkeypatch.setattr(distilled_encoder, "save_model", stopped_while_writing)
    result = _export(overrides, "--out", str(tmp_path / "enc"))
    assert result.exit_code == 130, result.output
    assert "interrupted" in result.stderr
    assert list(tmp_path.iterdir()) == [], "neither the export nor its temporary copy"
    assert signal.getsignal(signum) is signal.SIG_DFL, "the verb's handlers are gone after it"


def test_files_added_anywhere_in_an_earlier_export_stop_its_replacement(trained, tmp_path):
    out, overrides, _ = trained
    target = tmp_path / "enc"
    assert _export(overrides, "--out", str(target)).exit_code == 0
    assert _export(overrides, "--out", str(target)).exit_code == 0, "an export as it was written is replaced"
    (target / "student" / "my_notes.md").write_text("mine")
    result = _export(overrides, "--out", str(target))
    assert result.exit_code == 1
    assert "also holds student/my_notes.md (not written by recipe)" in result.stderr, result.stderr
    assert (target / "student" / "my_notes.md").read_text() == "mine"


def test_checkpoint_and_out_options(trained, tmp_path):
    out, overrides, (expected, _) = trained
    earlier = out / "checkpoints" / "step-00000002"
    assert earlier.is_dir()
    result = _export(overrides, "--checkpoint", str(earlier), "--out", str(tmp_path / "enc"))
    assert result.exit_code == 0, result.output + repr(result.exception)
    embeds, mask = DistilledEncoder.load(tmp_path / "enc").encode(PROMPTS)
    assert embeds.shape[-1] == 64 and mask.dtype == torch.bool
    assert not torch.allclose(embeds, expected), "step 2 weights differ from the final ones"


def test_an_older_best_is_not_what_the_default_exports(trained, tmp_path):
    out, overrides, (expected, _) = trained
    copy = tmp_path / "run"
    shutil.copytree(out / "checkpoints", copy / "checkpoints", ignore=shutil.ignore_patterns("best"))
    shutil.copytree(out / "checkpoints" / "step-00000002", copy / "checkpoints" / "best")
    (copy / "checkpoints" / ".step-00000009.x.tmp").mkdir()  # an unfinished write is never picked
    result = _export([*overrides, f"output.dir={copy}"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "step-00000003" in result.stdout
    embeds, _ = DistilledEncoder.load(copy / "export").encode(PROMPTS)
    torch.testing.assert_close(embeds, expected, atol=1e-5, rtol=1e-5)


def test_a_best_newer_than_every_step_checkpoint_is_what_the_default_exports(trained, tmp_path):
    """A run killed after writing `best` at its last step, before that step's own checkpoint."""
    out, overrides, (expected, _) = trained
    copy = tmp_path / "run"
    shutil.copytree(out / "checkpoints", copy / "checkpoints", ignore=shutil.ignore_patterns("best", "step-00000003"))
    shutil.copytree(out / "checkpoints" / "step-00000003", copy / "checkpoints" / "best")
    result = _export([*overrides, f"output.dir={copy}"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert f"from {copy / 'checkpoints' / 'best'}," in result.stdout
    embeds, _ = DistilledEncoder.load(copy / "export").encode(PROMPTS)
    torch.testing.assert_close(embeds, expected, atol=1e-5, rtol=1e-5)


def test_checkpoints_of_the_recipe_this_one_extends_are_not_exported_under_its_name(trained, tmp_path):
    out, overrides, _ = trained
    result = _export([*overrides, "recipe=my_variant"], "--out", str(tmp_path / "enc"))
    assert result.exit_code == 1 and not (tmp_path / "enc").exists()
    assert "was trained by recipe 't5_to_qwen_tiny', not 'my_variant': export it with that recipe" in result.output


def test_an_export_of_another_recipe_is_not_replaced(trained, tmp_path):
    """A recipe that extends another inherits its output.dir, and with it the other recipe's export as target."""
    out, overrides, _ = trained
    assert _export(overrides, "--out", str(tmp_path / "enc")).exit_code == 0
    before = (tmp_path / "enc" / "encoder.json").read_bytes()
    result = _export([*overrides, "recipe=my_variant"], "--out", str(tmp_path / "enc"))
    assert result.exit_code == 1, result.output
    assert "holds the export of recipe 't5_to_qwen_tiny', not of 'my_variant', which replacing it would lose" in (
        result.stderr
    )
    assert (tmp_path / "enc" / "encoder.json").read_bytes() == before


def test_the_export_of_another_run_of_the_recipe_is_not_replaced(trained, tmp_path):
    """Same recipe name, another run (another seed, say): its own result at <run>/export was replaced silently."""
    _, overrides, _ = trained
    other = tmp_path / "seed3"
    other.mkdir()
    (other / "resolved_recipe.yaml").write_text("recipe: t5_to_qwen_tiny\n")
    assert _export(overrides, "--out", str(other / "enc")).exit_code == 0  # not its export folder: allowed
    before = (other / "enc" / "encoder.json").read_bytes()
    shutil.move(other / "enc", other / "export")
    result = _export(overrides, "--out", str(other / "export"))
    assert result.exit_code == 1 and f"--out {other / 'export'} is the export of the run in {other}" in result.stderr
    assert (other / "export" / "encoder.json").read_bytes() == before


def test_the_export_of_a_live_run_waits_for_it_and_another_folder_does_not(trained, tmp_path):
    from recipe_runner.trainer.run_dir import DirectoryLock

    out, overrides, _ = trained
    live = DirectoryLock(out).acquire()  # a `recipe run` of this output.dir, still training
    before = [(p, p.stat().st_mtime_ns) for p in sorted((out / "export").rglob("*"))]  # other tests export here
    try:
        result = _export(overrides)
        assert (
            result.exit_code == 1 and [(p, p.stat().st_mtime_ns) for p in sorted((out / "export").rglob("*"))] == before
        )
        assert f"{out} is in use by another `recipe run` (pid {os.getpid()}): wait for it to end" in result.output
        assert _export(overrides, "--out", str(tmp_path / "enc")).exit_code == 0
    finally:
        live.release()


def _listing(root: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "target",
    [".", "run", "run/checkpoints", "run/checkpoints/best", "run/checkpoints/step-00000100", "run/checkpoints/mine"],
)
def test_an_out_that_is_not_an_export_is_refused_before_any_work(trained, monkeypatch, target):
    out, overrides, _ = trained
    before = _listing(out.parent)
    monkeypatch.chdir(out.parent)

    def no_loading(*args):
        raise AssertionError("the target is checked before the checkpoint is loaded")

    monkeypatch.setattr("recipe_runner.commands.export.load_checkpointed_model", no_loading)
    result = _export(overrides, "--out", target)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    if "/checkpoints" in target:  # a run's own folder: an export there would stop a resume at its step
        checkpoints = out.parent / "run" / "checkpoints"
        where = "is the checkpoints folder" if target.endswith("checkpoints") else f"is in {checkpoints}"
        assert result.stderr.startswith(f"error: --out {target} {where}, where `recipe run` writes, "
                                        "resumes from and prunes checkpoints: choose another --out (the default is "
                                        f"{out / 'export'})"), result.stderr  # fmt: skip
    else:
        refused = (out.parent / target).resolve()
        assert result.stderr.startswith(f"error: {refused} is a directory but not a previous export"), result.stderr
        assert "choose another --out" in result.stderr
    assert _listing(out.parent) == before, "nothing was removed or added"


def test_a_checkpoint_without_sums_is_exported_with_a_note_that_it_went_unchecked(trained, tmp_path):
    out, overrides, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(out / "checkpoints", copy / "checkpoints")
    final = copy / "checkpoints" / "step-00000003"
    (final / "checksums.json").unlink()  # a kill while its sums were being taken
    result = _export([*overrides, f"output.dir={copy}"])
    assert result.exit_code == 0, result.output
    assert f"note: {final} has no checksums.json (its hashing was cut short, or it predates sums)" in result.stderr


def test_the_root_folder_as_out_is_one_line(trained):
    result = _export(trained[1], "--out", "/")
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.stderr.startswith("error: / is the file system's root, not an export folder: choose another --out")


def test_no_checkpoint_is_a_clear_error(tmp_path):
    overrides = _overrides(tmp_path / "never_trained")
    result = _export(overrides)
    assert result.exit_code == 1
    offered = result.stderr.split("train one first with `")[1].split("`")[0]
    assert shlex.split(offered) == ["recipe", "run", str(TINY), *(arg for o in overrides for arg in ("--set", o))]
    assert "Traceback" not in result.output
    assert not (tmp_path / "never_trained" / "export").exists()


def test_a_run_stopped_before_its_first_checkpoint_is_offered_its_resume(tmp_path):
    """A plain `recipe run` would refuse to replace the stopped run's metrics.jsonl: the offer is --resume."""
    overrides = _overrides(tmp_path / "stopped")
    (tmp_path / "stopped").mkdir()
    (tmp_path / "stopped" / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    result = _export(overrides)
    assert result.exit_code == 1
    offered = result.stderr.split("stopped before its first one; `")[1].split("`")[0]
    sets = (arg for o in overrides for arg in ("--set", o))
    assert shlex.split(offered) == ["recipe", "run", str(TINY), *sets, "--resume"]


def test_a_best_hidden_by_a_run_killed_mid_swap_is_read_where_it_is(trained, tmp_path):
    out, overrides, _ = trained
    copy = tmp_path / "run"
    shutil.copytree(out / "checkpoints" / "best", copy / "checkpoints" / ".best.old")
    result = _export(_overrides(copy), "--out", str(tmp_path / "enc"))
    assert result.exit_code == 1
    assert f"{copy / 'checkpoints' / '.best.old'} is whole: pass --checkpoint" in result.stderr
    result = _export(
        _overrides(copy), "--checkpoint", str(copy / "checkpoints" / "best"), "--out", str(tmp_path / "enc")
    )
    assert result.exit_code == 0, result.output
    assert "a run was killed while replacing it: reading" in result.stderr
    assert not (copy / "checkpoints" / "best").exists(), "putting it back is left to the run, which holds the lock"


def test_an_incomplete_checkpoint_is_refused(trained, tmp_path):
    _, overrides, _ = trained
    (tmp_path / "half").mkdir()
    result = _export(overrides, "--checkpoint", str(tmp_path / "half"), "--out", str(tmp_path / "enc"))
    assert result.exit_code == 1
    assert "not a complete checkpoint" in result.stderr
    run_dir = trained[0]
    result = _export(overrides, "--checkpoint", str(run_dir), "--out", str(tmp_path / "enc"))
    assert f"a run's checkpoints are in {run_dir / 'checkpoints'} (newest step-00000003)" in result.stderr
    result = _export(overrides, "--checkpoint", str(tmp_path / "nope"), "--out", str(tmp_path / "enc"))
    assert result.exit_code == 1 and f"--checkpoint {tmp_path / 'nope'}: does not exist" in result.stderr


def test_a_damaged_checkpoint_is_refused_with_the_others_to_export(trained, tmp_path):
    out, overrides, _ = trained
    damaged = tmp_path / "step-00000003"
    shutil.copytree(out / "checkpoints" / "step-00000003", damaged)
    model_file = damaged / "model.safetensors"
    data = bytearray(model_file.read_bytes())
    data[-7] ^= 0x10
    model_file.write_bytes(bytes(data))
    result = _export(overrides, "--checkpoint", str(damaged), "--out", str(tmp_path / "enc"))
    assert result.exit_code == 1, result.output
    assert f"{damaged} is damaged" in result.stderr and "SHA-256 differs" in result.stderr
    assert "Traceback" not in result.output and not (tmp_path / "enc").exists()

    model_file.write_bytes(bytes(data[:100]))  # truncated: what safetensors itself notices
    (damaged / "checksums.json").unlink()
    result = _export(overrides, "--checkpoint", str(damaged), "--out", str(tmp_path / "enc"))
    assert result.exit_code == 1, result.output
    assert f"{damaged} is damaged" in result.stderr and "Traceback" not in result.output


def test_a_checkpoint_of_another_architecture_is_refused(trained, tmp_path):
    out, overrides, _ = trained
    wider = [*overrides, "bolt_on.layers.0.out_dim=80"]
    result = _export(wider, "--checkpoint", str(out / "checkpoints" / "best"), "--out", str(tmp_path / "enc"))
    assert result.exit_code == 1, result.output
    assert "does not fit" in result.stderr
    assert "changed since it was saved: bolt_on.layers.0.out_dim: 96 -> 80" in result.stderr, result.stderr
    assert "Traceback" not in result.output


def test_weights_that_would_be_read_another_way_are_refused_and_another_length_is_said(trained, tmp_path):
    """Another tokenizer or student layer fits the weights' shapes: only the checkpoint's record shows that the
    export would read them otherwise than they were trained."""
    out, overrides, _ = trained
    best = ["--checkpoint", str(out / "checkpoints" / "best")]
    other = [*overrides, f"student.tokenizer={ROOT / 'data' / 'tokenizers' / 'tiny_t5'}", "student.layer=-2"]
    result = _export(other, *best, "--out", str(tmp_path / "enc"))
    assert result.exit_code == 1, result.output
    assert "was trained otherwise than this recipe would export it: student.tokenizer: " in result.stderr
    assert "student.layer: -1 -> -2 (the bolt-on learned from that layer's hidden states)" in result.stderr
    assert "resolved_recipe.yaml" in result.stderr and not (tmp_path / "enc").exists()
    result = _export([*overrides, "student.max_length=32"], *best, "--out", str(tmp_path / "short"))
    assert result.exit_code == 0, result.output
    assert "student.max_length is 32, and " in result.stderr and "was trained at 128" in result.stderr


def test_a_lora_stage_checkpoint_is_merged(tmp_path):
    out = tmp_path / "run"
    overrides, (expected, _) = _train(out, "stages.0.student_lora={r: 4, alpha: 8}", "stages.0.lr.student=0.05")
    final = ["--checkpoint", str(out / "checkpoints" / "step-00000003")]
    rescaled = _export([*overrides, "stages.0.student_lora={r: 4, alpha: 64}"], *final)  # fits, merges 8x as much
    assert rescaled.exit_code == 1 and not (out / "export").exists(), rescaled.output
    assert "stages.0.student_lora.alpha: 8.0 -> 64.0 (the adapters are merged at alpha / r)" in rescaled.stderr
    result = _export(overrides, *final)
    assert result.exit_code == 0, result.output + repr(result.exception)
    encoder = DistilledEncoder.load(out / "export")
    assert not any("lora" in name for name, _ in encoder.student.named_parameters())
    embeds, _ = encoder.encode(PROMPTS)
    torch.testing.assert_close(embeds, expected, atol=1e-5, rtol=1e-5)


def test_an_export_too_big_for_the_disk_is_refused_before_writing(trained, tmp_path, monkeypatch):
    out, overrides, _ = trained
    target = tmp_path / "exported"
    monkeypatch.setattr(shutil, "disk_usage", lambda path: Usage(10**9, 0, 1000))
    result = _export(overrides, "--out", str(target))
    assert result.exit_code == 1, result.output
    assert f"not enough disk space for {target}" in result.output
    assert "1000 bytes are free" in result.output and "--out DIR" in result.output
    assert "Traceback" not in result.output
    assert not target.exists() and not list(tmp_path.iterdir())


def test_a_disk_that_fills_during_the_export_is_one_line(trained, tmp_path, monkeypatch, disk_full_in_safetensors):
    import safetensors.torch

    out, overrides, _ = trained

    def fills_up(*args, **kwargs):
        raise disk_full_in_safetensors  # after the free-space check passed: another process wrote meanwhile

    monkeypatch.setattr(safetensors.torch, "save_file", fills_up)
    result = _export(overrides, "--out", str(tmp_path / "enc"))
    assert result.exit_code == 1, result.output
    assert result.stderr == (
        f"error: could not write the export to {tmp_path / 'enc'}: No space left on device; nothing was left "
        "half-written (an earlier export there is kept): free space, or write it to another disk with --out DIR\n"
    )
    assert list(tmp_path.iterdir()) == []

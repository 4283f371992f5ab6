"""`recipe infer` end to end on the tiny recipe: qwen, t5, --compare, numbering, and errors with exit code 2."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from components.bolt_on.stack import build_bolt_on
from components.export import export_encoder
from components.models import build_model, load_tokenizer
from recipe_runner.cli import main
from recipe_runner.commands.infer import infer
from recipe_runner.loader import load_recipe

RECIPE = Path(__file__).parents[2] / "components" / "inference" / "assets" / "tiny_chroma.yaml"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A run directory holding an export of random tiny modules, as `recipe run` leaves it."""
    run = tmp_path_factory.mktemp("run")
    recipe = load_recipe(RECIPE, [f"output.dir={run}"]).recipe
    student = build_model(recipe.student, "student")
    export_encoder(
        run / "export", recipe, student, build_bolt_on(recipe.bolt_on, 32, 64), load_tokenizer(recipe.student)
    )
    return run


def _infer(run_dir: Path, *args: str):
    result = CliRunner().invoke(infer, [str(RECIPE), "--set", f"output.dir={run_dir}", *args])
    return result


def _ok(result) -> list[Path]:
    assert result.exit_code == 0, result.output + repr(result.exception)
    return [Path(line) for line in result.stdout.splitlines()]


@pytest.mark.parametrize("encoder", ["qwen", "t5"])
def test_renders_a_png_of_the_requested_size(run_dir, tmp_path, encoder):
    out = tmp_path / f"{encoder}.png"
    args = ["--prompt", "a red fox", "--encoder", encoder, "--width", "48", "--height", "32", "--out", str(out)]
    assert _ok(_infer(run_dir, *args)) == [out]
    image = Image.open(out)
    assert image.format == "PNG" and image.size == (48, 32)


def test_defaults_come_from_the_recipe(run_dir):
    written = _ok(_infer(run_dir, "--prompt", "a red fox"))
    assert written == [run_dir / "images" / "qwen.png"]
    assert Image.open(written[0]).size == (64, 64)


def test_the_same_seed_gives_the_same_image(run_dir, tmp_path):
    images = []
    for name, seed in (("a", "3"), ("b", "3"), ("c", "4")):
        _ok(_infer(run_dir, "--prompt", "a red fox", "--seed", seed, "--out", str(tmp_path / f"{name}.png")))
        images.append(np.asarray(Image.open(tmp_path / f"{name}.png")))
    assert np.array_equal(images[0], images[1])
    assert not np.array_equal(images[0], images[2])


def test_compare_puts_both_encoders_side_by_side(run_dir, tmp_path):
    for encoder in ("t5", "qwen"):
        _ok(_infer(run_dir, "--prompt", "a red fox", "--encoder", encoder, "--out", str(tmp_path / f"{encoder}.png")))
    _ok(_infer(run_dir, "--prompt", "a red fox", "--compare", "--out", str(tmp_path / "both.png")))

    grid = np.asarray(Image.open(tmp_path / "both.png").convert("RGB"))
    single = {encoder: np.asarray(Image.open(tmp_path / f"{encoder}.png").convert("RGB")) for encoder in ("t5", "qwen")}
    assert grid.shape[0] > 64 and grid.shape[1] >= 2 * 64
    body = grid[-64:]
    for encoder, image in single.items():
        found = any(np.array_equal(body[:, x : x + 64], image) for x in range(grid.shape[1] - 63))
        assert found, f"the {encoder} panel is the {encoder} render (same seed)"
    assert (grid[: grid.shape[0] - 64] < 128).any(), "labels above the panels"


def test_several_prompts_give_numbered_files(run_dir, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red fox\n\na blue house\n")
    written = _ok(_infer(run_dir, "--prompts", str(prompts), "--prompt", "a cat", "--out", str(tmp_path / "img.png")))
    assert written == [tmp_path / "img_01.png", tmp_path / "img_02.png", tmp_path / "img_03.png"]
    assert all(path.is_file() for path in written)
    # Numbered names are not what --out named: an earlier file under one of them is kept.
    (tmp_path / "img_01.png").unlink()
    (tmp_path / "img_02.png").write_bytes(b"an earlier file of the user's")
    again = _ok(_infer(run_dir, "--prompt", "a", "--prompt", "b", "--out", str(tmp_path / "img.png")))
    assert again == [tmp_path / "img-1_01.png", tmp_path / "img-1_02.png"]
    assert (tmp_path / "img_02.png").read_bytes() == b"an earlier file of the user's"
    assert not (tmp_path / "img_01.png").exists()


def test_an_export_alone_is_enough(run_dir, tmp_path):
    out = tmp_path / "alone.png"
    result = CliRunner().invoke(infer, ["--checkpoint", str(run_dir / "export"), "--prompt", "cat", "--out", str(out)])
    assert _ok(result) == [out]
    result = CliRunner().invoke(
        infer, ["--checkpoint", str(run_dir / "export"), "--prompt", "cat", "--compare", "--out", str(out)]
    )
    assert _ok(result) == [out] and Image.open(out).width > 64
    alone = ["--checkpoint", str(run_dir / "export"), "--prompt", "cat", "--max-new-tokens", "5", "--out", str(out)]
    _fails(CliRunner().invoke(infer, alone), "--max-new-tokens sets how much text", code=2)
    run = ["--checkpoint", str(run_dir), "--prompt", "cat"]
    _fails(
        CliRunner().invoke(infer, run),
        f"--checkpoint {run_dir}: holds a run; its export is {run_dir / 'export'}",
        code=2,
    )
    with_set = ["--checkpoint", str(run_dir / "export"), "--prompt", "cat", "--set", "inference.size=[32,32]"]
    _fails(CliRunner().invoke(infer, with_set), "--set changes a recipe, and none is given", code=2)


def _fails(result, *fragments: str, code: int = 1) -> None:
    """Exit code 1 and one `error:` line for a setup problem (as in every verb); no traceback in any case."""
    assert result.exit_code == code, result.output
    assert code != 1 or "error: " in result.stderr, result.stderr
    assert isinstance(result.exception, SystemExit), "no traceback"
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr


def _usage_error(result, *fragments: str) -> None:
    """How the command was called (an option's value, a missing or contradictory option): click's usage line,
    `Error: ...` and exit code 2."""
    _fails(result, *fragments, code=2)
    assert result.stderr.startswith("Usage: ") and "\nError: " in result.stderr, result.stderr


def _recipe_problem(result, *fragments: str) -> None:
    """The recipe file: `file:line:col: field: message` lines, `N problem(s) found.` and exit code 2."""
    _fails(result, *fragments, "found.", code=2)


def test_the_default_path_never_replaces_an_earlier_image(run_dir, tmp_path):
    def render(*args: str) -> list[Path]:
        sets = ["--set", f"output.dir={tmp_path}", "--checkpoint", str(run_dir / "export")]
        return _ok(CliRunner().invoke(infer, [str(RECIPE), *sets, *args]))

    images = tmp_path / "images"
    assert render("--prompt", "cat") == [images / "qwen.png"]
    first = (images / "qwen.png").read_bytes()
    assert render("--prompt", "cat", "--seed", "5") == [images / "qwen-1.png"]
    assert (images / "qwen.png").read_bytes() == first
    assert render("--prompt", "a", "--prompt", "b") == [images / "qwen_01.png", images / "qwen_02.png"]
    assert render("--prompt", "a", "--prompt", "b") == [images / "qwen-1_01.png", images / "qwen-1_02.png"]
    assert render("--prompt", "cat") == [images / "qwen-2.png"]


def test_an_explicit_out_is_replaced(run_dir, tmp_path):
    out = tmp_path / "mine.png"
    Image.new("RGB", (3, 3)).save(out)
    assert _ok(_infer(run_dir, "--prompt", "cat", "--out", str(out))) == [out]
    assert Image.open(out).format == "PNG" and Image.open(out).size != (3, 3)
    jpeg = tmp_path / "mine.JPG"
    assert _ok(_infer(run_dir, "--prompt", "cat", "--out", str(jpeg))) == [jpeg]
    assert Image.open(jpeg).format == "JPEG"


def _no_rendering(monkeypatch) -> None:
    def run_job(job):
        raise AssertionError("--out is checked before any model loads")

    monkeypatch.setattr("recipe_runner.commands.infer.run_job", run_job)


def test_an_out_that_cannot_be_written_is_refused_before_rendering(run_dir, tmp_path, monkeypatch):
    _no_rendering(monkeypatch)
    result = _infer(run_dir, "--prompt", "cat", "--out", "notes.txt")
    _usage_error(result, "Error: --out notes.txt: the file name must end in .png")
    notes = tmp_path / "notes.png"
    notes.write_text("not an image: my notes")
    _usage_error(
        _infer(run_dir, "--prompt", "cat", "--out", str(notes)),
        f"--out {notes}: exists and is not an image, so it is not replaced; move it away or give another path",
    )
    assert notes.read_text() == "not an image: my notes"
    (tmp_path / "file").write_text("")
    under_a_file = tmp_path / "file" / "img.png"
    _usage_error(
        _infer(run_dir, "--prompt", "cat", "--out", str(under_a_file)),
        f"--out {under_a_file}: {tmp_path / 'file'} is a file, not a directory",
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_out_directory_is_refused_before_rendering(run_dir, tmp_path, monkeypatch):
    _no_rendering(monkeypatch)
    (tmp_path / "ro").mkdir(mode=0o555)
    _usage_error(_infer(run_dir, "--prompt", "cat", "--out", str(tmp_path / "ro" / "a.png")), "cannot write to")


def test_a_missing_prompt_file_or_a_stale_cache_does_not_stop_rendering(run_dir, tmp_path):
    """infer reads neither: a user who only wants images is not sent to delete an expensive cache."""
    cache = tmp_path / "cache" / "train"
    cache.mkdir(parents=True)
    (cache / "manifest.json").write_text(json.dumps({"prompts_sha256": "other", "count": 3}))
    missing = f"data.train={tmp_path / 'gone.txt'}"
    out = tmp_path / "fox.png"
    stale = f"teacher.cache={{dir: {tmp_path / 'cache'}}}"
    _ok(_infer(run_dir, "--set", missing, "--set", stale, "--prompt", "a fox", "--out", str(out), "--encoder", "qwen"))
    assert out.is_file() and (cache / "manifest.json").is_file()
    validate = CliRunner().invoke(main, ["validate", str(RECIPE), "--set", missing])
    assert validate.exit_code == 2 and "data file not found" in validate.output  # validate still says it
    validate = CliRunner().invoke(main, ["validate", str(RECIPE), "--set", stale])
    assert validate.exit_code == 2 and "teacher.cache.dir" in validate.output


def test_a_training_checkpoint_points_to_recipe_export(tmp_path):
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / "trainer_state.json").write_text("{}")
    result = CliRunner().invoke(infer, ["--checkpoint", str(tmp_path / "best"), "--prompt", "cat"])
    _usage_error(result, "Error: --checkpoint", "is a training checkpoint, not an exported encoder", "recipe export")


def test_no_export_says_how_to_make_one_with_this_commands_own_lines(tmp_path):
    """A recipe never run is trained; a run with checkpoints is exported; each with this command's --set values."""
    import shlex

    run_dir = tmp_path / "empty run"
    result = _infer(run_dir, "--prompt", "cat")
    _fails(result, f"no export in {run_dir / 'export'}: train the recipe first with `")
    offered = result.stderr.split("`")[1]
    assert shlex.split(offered) == ["recipe", "run", str(RECIPE), "--set", f"output.dir={run_dir}"]
    (run_dir / "checkpoints" / "step-00000004").mkdir(parents=True)
    (run_dir / "checkpoints" / "step-00000004" / "trainer_state.json").write_text("{}")
    result = _infer(run_dir, "--prompt", "cat")
    _fails(result, f"no export in {run_dir / 'export'} yet: write it from the run's last checkpoint with `")
    assert shlex.split(result.stderr.split("`")[1]) == [
        "recipe",
        "export",
        str(RECIPE),
        "--set",
        f"output.dir={run_dir}",
    ]


def test_width_mismatch_names_both_numbers(run_dir):
    result = _infer(run_dir, "--prompt", "cat", "--set", "inference.pipeline_config.transformer.joint_attention_dim=32")
    _recipe_problem(result, "width 64", "joint_attention_dim 32")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "Error: no prompt: give --prompt TEXT or --prompts FILE"),
        (["--prompt", "cat", "--prompt", "  "], "Error: --prompt #2 ('  '): empty; give it some text"),
        (["--prompt", "cat", "--width", "65"], "Invalid value for '--width': 65: must be a multiple of 16 from 16 to"),
        (["--prompt", "cat", "--width", "0"], "Invalid value for '--width': 0: must be a multiple of 16 from 16 to"),
        (["--prompt", "cat", "--height", "100000"], "'--height': 100000: must be a multiple of 16 from 16 to 4096"),
        (["--prompt", "cat", "--steps", "10000000000000000"], "'--steps': 10000000000000000 is not in the range"),
        (["--prompt", "cat", "--height", "-16"], "'--height': -16: must be a multiple of 16 from 16 to"),
        (["--prompt", "cat", "--steps", "0"], "Invalid value for '--steps': 0 is not in the range 1<=x<=1000"),
        (["--prompt", "cat", "--guidance", "-1"], "Invalid value for '--guidance': -1: must be from 0 to 30"),
        (["--prompt", "cat", "--guidance", "1e30"], "Invalid value for '--guidance': 1e30: must be from 0 to 30"),
        (["--prompt", "cat", "--guidance", "nan"], "Invalid value for '--guidance': nan: must be from 0 to 30"),
        (["--prompt", "cat", "--seed", "-1"], "Invalid value for '--seed'"),
        (["--prompts", "/no/such/file.txt"], "Error: --prompts /no/such/file.txt: cannot read"),
        (["--prompt", "cat", "--checkpoint", "/no/such/dir"], "Error: --checkpoint /no/such/dir: does not exist"),
        (["--prompt", "cat", "--max-new-tokens", "5"], "Error: --max-new-tokens sets how much text a logits recipe"),
    ],
)
def test_bad_options_are_clear_errors(run_dir, args, message):
    _usage_error(_infer(run_dir, *args), message)


def test_a_prompts_file_that_is_not_utf8_names_the_line(run_dir, tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"a fox\n\xff\n")
    _usage_error(_infer(run_dir, "--prompts", str(bad)), f"Error: --prompts {bad}:2: not UTF-8 (byte 0xff at byte")


def test_a_prompts_file_saved_with_a_byte_order_mark_reads_as_its_text(tmp_path):
    """An editor's BOM stayed at the start of the first prompt, which rendered another image."""
    from recipe_runner.commands.infer import _read_prompts

    marked = tmp_path / "bom.txt"
    marked.write_bytes(b"\xef\xbb\xbfa red fox\r\na cat\r\n")
    assert _read_prompts((), str(marked)) == ("a red fox", "a cat")


def test_a_prompts_file_without_prompts_is_named(run_dir, tmp_path):
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    _usage_error(_infer(run_dir, "--prompts", str(blank)), f"Error: --prompts {blank}: no prompts in file")


def test_recipe_problems_are_reported_with_positions(run_dir):
    result = CliRunner().invoke(infer, [str(RECIPE), "--set", "stages.0.lr.student=-1", "--prompt", "cat"])
    _recipe_problem(result, "stages[0].lr.student")


@pytest.mark.parametrize(
    ("missing", "args", "message"),
    [
        ("inference", [], "the export records no inference settings: give the RECIPE too"),
        ("teacher", ["--encoder", "t5"], "--encoder t5 needs the teacher, which the export at"),
        ("teacher", ["--compare"], "--compare needs the teacher"),
    ],
)
def test_an_export_without_what_the_options_need_asks_for_the_recipe(run_dir, tmp_path, missing, args, message):
    import json
    import shutil

    export = tmp_path / "export"
    shutil.copytree(run_dir / "export", export)
    manifest = json.loads((export / "encoder.json").read_text())
    (export / "encoder.json").write_text(json.dumps({**manifest, missing: None}))
    _usage_error(CliRunner().invoke(infer, ["--checkpoint", str(export), "--prompt", "cat", *args]), message)


def test_recipe_or_checkpoint_is_required():
    _usage_error(CliRunner().invoke(infer, ["--prompt", "cat"]), "Error: give a RECIPE, or --checkpoint DIR")


def test_recipe_without_inference_section(run_dir):
    result = _infer(run_dir, "--prompt", "cat", "--set", "inference=null")
    _recipe_problem(result, "--set #2 (inference=null): inference: `recipe infer` needs this section")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize(
    ("device", "fragment"),
    [
        ("cuda", "this machine has 0 visible CUDA device(s)"),
        ("banana", "not a device name"),
        ("mps", "`recipe infer` runs on cpu or cuda"),
        ("meta", "`recipe infer` runs on cpu or cuda"),
    ],
)
def test_a_device_this_machine_cannot_use_is_one_line(run_dir, device, fragment):
    _usage_error(_infer(run_dir, "--prompt", "cat", "--device", device), f"Error: --device {device}: {fragment}")


def test_compare_with_an_encoder_is_a_usage_error(run_dir, monkeypatch):
    _no_rendering(monkeypatch)
    result = _infer(run_dir, "--prompt", "cat", "--compare", "--encoder", "t5")
    _usage_error(result, "Error: --compare renders both encoders (t5 and qwen), so --encoder cannot be given with it")


def test_the_recipe_takes_the_guidance_range_of_the_option(run_dir, tmp_path):
    _ok(_infer(run_dir, "--prompt", "cat", "--guidance", "30", "--out", str(tmp_path / "a.png")))
    _ok(_infer(run_dir, "--prompt", "cat", "--set", "inference.guidance=30", "--out", str(tmp_path / "b.png")))
    result = _infer(run_dir, "--prompt", "cat", "--set", "inference.guidance=1e30")
    _recipe_problem(result, "inference.guidance: must be from 0 to 30, got 1e+30")


def test_nan_pixels_are_not_saved(run_dir, tmp_path, monkeypatch):
    import components.inference

    build = components.inference.build_chroma_pipeline

    def poisoned(*args, **kwargs):
        pipeline = build(*args, **kwargs)
        with torch.no_grad():
            pipeline.vae.decoder.conv_out.bias.fill_(float("nan"))
        return pipeline

    monkeypatch.setattr(components.inference, "build_chroma_pipeline", poisoned)
    out = tmp_path / "nan.png"
    result = _infer(run_dir, "--prompt", "a red fox", "--out", str(out))
    _fails(result, "error: prompt 1 'a red fox' with qwen (distilled): the render has NaN or infinite pixels")
    assert not out.exists()


def test_loading_a_saved_teacher_shows_no_progress_bar(run_dir, tmp_path):
    """The T5 path loads real weights quietly, the way an export loads; the caller's bar setting comes back."""
    from transformers.utils import logging as transformers_logging

    build_model(load_recipe(RECIPE).recipe.teacher, "teacher").save_pretrained(tmp_path / "t5")
    teacher = ["--set", "teacher.config=null", "--set", f"teacher.model={tmp_path / 't5'}"]
    result = _infer(run_dir, *teacher, "--prompt", "cat", "--encoder", "t5", "--out", str(tmp_path / "t5.png"))
    assert _ok(result) == [tmp_path / "t5.png"]
    assert "Loading weights" not in result.stderr, result.stderr
    assert transformers_logging.is_progress_bar_enabled()


def test_another_recipes_export_at_an_inherited_output_dir_is_not_rendered_as_this_ones(run_dir, tmp_path):
    recipe_name = load_recipe(RECIPE, [f"output.dir={run_dir}"]).recipe.recipe
    result = _infer(run_dir, "--set", "recipe=my_variant", "--prompt", "a fox", "--out", str(tmp_path / "a.png"))
    _fails(result, f"holds the export of recipe {recipe_name!r}, not of 'my_variant'",
           f"or render that export on purpose with --checkpoint {run_dir / 'export'}")  # fmt: skip
    assert not (tmp_path / "a.png").exists()
    with_checkpoint = ["--checkpoint", str(run_dir / "export"), "--prompt", "a fox", "--out", str(tmp_path / "a.png")]
    assert _ok(_infer(run_dir, "--set", "recipe=my_variant", *with_checkpoint)) == [tmp_path / "a.png"]


def test_an_export_copied_from_another_machine_asks_for_the_recipe_to_find_its_teacher(run_dir, tmp_path):
    import json
    import shutil

    export = tmp_path / "export"
    shutil.copytree(run_dir / "export", export)
    manifest = json.loads((export / "encoder.json").read_text())
    gone = "/home/someone/project/data/tokenizers/tiny_t5"
    (export / "encoder.json").write_text(
        json.dumps({**manifest, "teacher": {**manifest["teacher"], "tokenizer": gone}})
    )
    result = CliRunner().invoke(infer, ["--checkpoint", str(export), "--prompt", "cat", "--compare"])
    expected = (
        f"the teacher's tokenizer recorded in {export / 'encoder.json'} is {gone}, which is not on this machine (the "
        "export was made elsewhere, or its project moved): give the RECIPE too"
    )
    _usage_error(result, expected)


def test_the_teacher_is_drawn_from_the_seed_training_drew_it_from(run_dir, tmp_path, monkeypatch):
    """An inline teacher's random weights come from hardware.seed: the t5 half was another teacher before."""
    import components.inference as inference

    seeds, real = [], inference.encode_with_teacher

    def spy(*args, **kwargs):
        seeds.append(args[4])
        return real(*args, **kwargs)

    monkeypatch.setattr(inference, "encode_with_teacher", spy)
    _ok(
        _infer(
            run_dir, "--prompt", "fox", "--encoder", "t5", "--set", "hardware.seed=3", "--out", str(tmp_path / "a.png")
        )
    )
    recipe = load_recipe(RECIPE, [f"output.dir={tmp_path / 'seed5'}", "hardware.seed=5"]).recipe
    export = tmp_path / "export"
    student = build_model(recipe.student, "student")
    export_encoder(export, recipe, student, build_bolt_on(recipe.bolt_on, 32, 64), load_tokenizer(recipe.student))
    assert json.loads((export / "encoder.json").read_text())["teacher_seed"] == 5
    args = ["--checkpoint", str(export), "--prompt", "fox", "--encoder", "t5", "--out", str(tmp_path / "b.png")]
    _ok(CliRunner().invoke(infer, args))
    assert seeds == [3, 5]


def test_a_negative_prompt_that_guidance_1_or_less_leaves_unused_is_said(run_dir, tmp_path):
    args = ["--prompt", "fox", "--negative-prompt", "blurry", "--out", str(tmp_path / "a.png")]
    result = _infer(run_dir, *args, "--guidance", "1")
    _ok(result)
    assert "warning: guidance 1 renders without classifier-free guidance" in result.stderr
    assert "warning" not in _infer(run_dir, *args, "--guidance", "1.5").stderr


def test_a_cut_prompt_is_one_line_naming_it_and_the_setting_and_a_cut_negative_prompt_is_named_so(run_dir, tmp_path):
    """Before: "prompt 1" for the negative prompt, twice, at contextlib's line; the T5 one named no prompt."""
    long = " ".join(["blurry ugly"] * 100)
    args = [
        "--prompt",
        "fox",
        "--prompt",
        long,
        "--negative-prompt",
        long,
        "--compare",
        "--out",
        str(tmp_path / "a.png"),
    ]
    result = _infer(run_dir, *args)
    _ok(result)
    lines = [line for line in result.stderr.splitlines() if "only the first" in line]
    assert len(lines) == len(set(lines)) == 4, result.stderr  # prompt 2 and the negative prompt, each encoder
    assert any(line.startswith("warning: prompt 2 (") and "T5 teacher's teacher.max_length" in line for line in lines)
    assert any(line.startswith("warning: the negative prompt (") and "student.max_length" in line for line in lines)
    assert "Token indices sequence length" not in result.stderr and "contextlib" not in result.stderr

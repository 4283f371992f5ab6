"""Export round trip, manifest contents, atomic replacement, peft merging and encode() errors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from components.atomic_files import ForeignDirectoryError
from components.bolt_on.stack import build_bolt_on
from components.export import (
    FORMAT_VERSION,
    DistilledEncoder,
    EncoderManifest,
    ExportError,
    build_manifest,
    check_export_target,
    export_encoder,
    read_manifest,
)
from components.export.distilled_encoder import CHECKPOINT_MARKER
from components.models import build_model, load_tokenizer
from recipe_runner.loader import load_recipe
from recipe_runner.trainer.checkpoint import COMPLETE

RECIPE = Path(__file__).parents[1] / "inference" / "assets" / "tiny_chroma.yaml"
PROMPTS = ["a red fox in the snow", "cat", "an old lighthouse at dusk, oil painting"]


def _recipe(tmp_path: Path, *overrides: str):
    return load_recipe(RECIPE, [f"output.dir={tmp_path / 'run'}", *overrides]).recipe


def _modules(recipe):
    student = build_model(recipe.student, "student")
    bolt_on = build_bolt_on(recipe.bolt_on, 32, 64)
    return student, bolt_on, load_tokenizer(recipe.student)


@pytest.fixture
def recipe(tmp_path):
    return _recipe(tmp_path)


def test_round_trip_gives_the_in_memory_embeddings(recipe, tmp_path):
    student, bolt_on, tokenizer = _modules(recipe)
    in_memory = DistilledEncoder(student, bolt_on, tokenizer, build_manifest(recipe, 32, 64))
    expected, expected_mask = in_memory.encode(PROMPTS)

    out = export_encoder(tmp_path / "export", recipe, student, bolt_on, tokenizer)
    embeds, mask = DistilledEncoder.load(out).encode(PROMPTS)

    assert embeds.dtype == torch.float32 and mask.dtype == torch.bool
    assert embeds.shape == (3, mask.shape[1], 64)
    assert torch.equal(mask, expected_mask)
    torch.testing.assert_close(embeds, expected, atol=1e-5, rtol=1e-5)
    assert mask[1].sum() < mask.shape[1], "the short prompt is right-padded"
    assert mask[1, : int(mask[1].sum())].all()
    assert torch.count_nonzero(embeds[~mask]) == 0, "padding positions carry zeros"


def test_manifest_records_spec_widths_and_inference(recipe, tmp_path):
    student, bolt_on, tokenizer = _modules(recipe)
    out = export_encoder(tmp_path / "export", recipe, student, bolt_on, tokenizer)

    raw = json.loads((out / "encoder.json").read_text())
    assert raw["format_version"] == FORMAT_VERSION
    assert (raw["student_width"], raw["output_width"]) == (32, 64)
    assert raw["max_length"] == 32 and raw["student_layer"] == -1
    manifest = read_manifest(out)
    assert isinstance(manifest, EncoderManifest)
    assert manifest.bolt_on == recipe.bolt_on
    assert manifest.inference == recipe.inference
    assert manifest.teacher == recipe.teacher
    assert (out / "bolt_on.safetensors").is_file() and (out / "student" / "model.safetensors").is_file()
    assert not list((out / "student").glob("*.bin")), "safetensors only"


def test_intermediate_student_layer_round_trips(tmp_path):
    recipe = _recipe(tmp_path, "student.layer=1")
    student, bolt_on, tokenizer = _modules(recipe)
    in_memory = DistilledEncoder(student, bolt_on, tokenizer, build_manifest(recipe, 32, 64))
    last = DistilledEncoder(student, bolt_on, tokenizer, build_manifest(_recipe(tmp_path), 32, 64))
    out = export_encoder(tmp_path / "export", recipe, student, bolt_on, tokenizer)

    loaded = DistilledEncoder.load(out)
    assert loaded.manifest.student_layer == 1
    torch.testing.assert_close(loaded.encode(PROMPTS)[0], in_memory.encode(PROMPTS)[0], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(in_memory.encode(PROMPTS)[0], last.encode(PROMPTS)[0])


def test_peft_adapters_are_merged_into_a_copy(recipe, tmp_path):
    from peft import LoraConfig, get_peft_model

    student, bolt_on, tokenizer = _modules(recipe)
    lora = get_peft_model(student, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    expected, _ = DistilledEncoder(lora, bolt_on, tokenizer, build_manifest(recipe, 32, 64)).encode(PROMPTS)

    out = export_encoder(tmp_path / "export", recipe, lora, bolt_on, tokenizer)

    saved = json.loads((out / "student" / "config.json").read_text())
    assert saved["model_type"] == "qwen3"
    embeds, _ = DistilledEncoder.load(out).encode(PROMPTS)
    torch.testing.assert_close(embeds, expected, atol=1e-4, rtol=1e-4)
    assert hasattr(lora.base_model.model.layers[0].self_attn.q_proj, "lora_A"), "training model keeps its adapters"


def test_failed_export_keeps_the_previous_one(recipe, tmp_path):
    student, bolt_on, tokenizer = _modules(recipe)
    out = export_encoder(tmp_path / "export", recipe, student, bolt_on, tokenizer)
    before, _ = DistilledEncoder.load(out).encode(PROMPTS)

    class BrokenTokenizer:
        def save_pretrained(self, path):
            raise OSError("disk full")

    with torch.no_grad():
        for param in bolt_on.parameters():
            param.add_(1.0)
    with pytest.raises(OSError, match="disk full"):
        export_encoder(tmp_path / "export", recipe, student, bolt_on, BrokenTokenizer())

    after, _ = DistilledEncoder.load(out).encode(PROMPTS)
    torch.testing.assert_close(after, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"], "no temporary directories left behind"


def test_export_replaces_an_existing_export(recipe, tmp_path):
    student, bolt_on, tokenizer = _modules(recipe)
    out = export_encoder(tmp_path / "export", recipe, student, bolt_on, tokenizer)
    before, _ = DistilledEncoder.load(out).encode(PROMPTS)
    with torch.no_grad():
        for param in bolt_on.parameters():
            param.add_(0.5)
    export_encoder(tmp_path / "export", recipe, student, bolt_on, tokenizer)
    after, _ = DistilledEncoder.load(out).encode(PROMPTS)
    assert not torch.allclose(after, before)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


@pytest.mark.parametrize("users", ["README.md", "trainer_state.json"])
def test_a_directory_that_is_not_an_export_is_never_replaced(recipe, tmp_path, users):
    """`--out .`, a run directory or a checkpoint: refused before anything is written, contents intact."""
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / users).write_text("keep me")
    with pytest.raises(ForeignDirectoryError, match=r"mine is a directory but not a previous export") as caught:
        export_encoder(tmp_path / "mine", recipe, *_modules(recipe))
    assert "choose another --out (or output.dir), or move" in str(caught.value)
    assert [p.name for p in (tmp_path / "mine").iterdir()] == [users]
    assert (tmp_path / "mine" / users).read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    with pytest.raises(ForeignDirectoryError):
        check_export_target(tmp_path / "mine")
    check_export_target(tmp_path / "new")  # a missing target is fine


def test_an_export_hidden_by_a_crash_mid_swap_is_read(recipe, tmp_path):
    out = export_encoder(tmp_path / "export", recipe, *_modules(recipe))
    out.rename(tmp_path / ".export.old")  # what a crash between the two renames of a re-export leaves
    assert read_manifest(out).recipe == recipe.recipe
    assert (out / "encoder.json").is_file()


def test_a_training_checkpoint_is_not_an_export(tmp_path):
    (tmp_path / "best").mkdir()
    (tmp_path / "best" / CHECKPOINT_MARKER).write_text("{}")
    with pytest.raises(ExportError, match="is a training checkpoint, not an exported encoder") as caught:
        read_manifest(tmp_path / "best")
    assert f"recipe export RECIPE --checkpoint {tmp_path / 'best'}" in str(caught.value)
    assert CHECKPOINT_MARKER == COMPLETE


def test_missing_export_says_how_to_make_one(tmp_path):
    with pytest.raises(ExportError, match=r"no exported encoder at .*nowhere: run `recipe run RECIPE`"):
        DistilledEncoder.load(tmp_path / "nowhere")


def test_bad_manifest_and_newer_format_are_clear(recipe, tmp_path):
    student, bolt_on, tokenizer = _modules(recipe)
    out = export_encoder(tmp_path / "export", recipe, student, bolt_on, tokenizer)
    manifest = out / "encoder.json"
    raw = json.loads(manifest.read_text())

    manifest.write_text(json.dumps({**raw, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ExportError, match="format version"):
        DistilledEncoder.load(out)
    manifest.write_text(json.dumps({**raw, "bolt_on": {"layers": [{"type": "conv"}]}}))
    with pytest.raises(ExportError, match="not a valid encoder manifest"):
        DistilledEncoder.load(out)


def test_empty_prompt_is_a_clear_error(recipe):
    encoder = DistilledEncoder(*_modules(recipe), build_manifest(recipe, 32, 64))
    with pytest.raises(ValueError, match="prompt 2 is empty"):
        encoder.encode(["a cat", "   "])
    with pytest.raises(ValueError, match="no prompts"):
        encoder.encode([])
    embeds, mask = encoder.encode([""], allow_empty=True)
    assert embeds.shape[0] == 1 and mask.shape == embeds.shape[:2]


def test_long_prompts_are_truncated_with_a_warning(recipe):
    encoder = DistilledEncoder(*_modules(recipe), build_manifest(recipe, 32, 64))
    long_prompt = " ".join(["a red fox jumps over the lazy dog"] * 20)
    with pytest.warns(UserWarning, match=r"^prompt 1 \(\d+ tokens\): only the first 8 tokens are read"):
        embeds, mask = encoder.encode([long_prompt, "cat"], max_length=8)
    assert embeds.shape == (2, 8, 64)
    assert mask[0].all()
    with pytest.warns(UserWarning, match=r"^the negative prompt \(\d+ tokens\): only the first 8 tokens"):
        encoder.encode([long_prompt], max_length=8, allow_empty=True, what="negative prompt")


@pytest.fixture
def exported(recipe, tmp_path) -> Path:
    return export_encoder(tmp_path / "export", recipe, *_modules(recipe))


@pytest.mark.parametrize("part", ["bolt_on.safetensors", "student/model.safetensors"])
def test_a_truncated_weight_file_is_named_with_how_to_remake_it(exported, part):
    os.truncate(exported / part, 100)
    with pytest.raises(ExportError) as caught:
        DistilledEncoder.load(exported)
    message = str(caught.value)
    assert message.startswith(f"{exported / part} is damaged (it is cut short")
    assert message.endswith("re-export with `recipe export RECIPE`")


@pytest.mark.parametrize(
    ("part", "fragment"),
    [
        ("encoder.json", "encoder.json: not a valid encoder manifest (Invalid JSON: EOF while parsing"),
        ("student/config.json", "config.json"),
        ("student/tokenizer.json", "tokenizer.json"),
    ],
)
def test_a_garbled_json_file_is_one_line_naming_it(exported, part, fragment):
    (exported / part).write_text('{"format_version": 1, "recipe": 3')
    with pytest.raises(ExportError) as caught:
        DistilledEncoder.load(exported)
    message = str(caught.value)
    assert fragment in message and message.endswith("re-export with `recipe export RECIPE`"), message
    assert "\n" not in message and "https://" not in message


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    ("part", "changes", "fragment"),
    [
        ("encoder.json", {"student_layer": 50}, "student_layer 50 is not a hidden state of the student"),
        ("student/config.json", {"hidden_size": 64}, "its weights have other shapes than its config.json says"),
        ("student/config.json", {"model_type": "bert", "architectures": ["BertModel"]}, "so they would start random"),
    ],
)
def test_an_export_edited_by_hand_is_one_line_before_any_prompt(exported, part, changes, fragment):
    _edit_json(exported / part, **changes)
    with pytest.raises(ExportError) as caught:
        DistilledEncoder.load(exported)
    message = str(caught.value)
    assert fragment in message and message.endswith("re-export with `recipe export RECIPE`"), message


def test_a_student_tokenizer_without_a_padding_token_pads_with_its_end_token(exported):
    """Training pads with any id (masked); a tokenizer that names no pad token still batches prompts."""
    from transformers import AutoTokenizer

    config = exported / "student" / "tokenizer_config.json"
    _edit_json(config, pad_token=None)
    assert AutoTokenizer.from_pretrained(exported / "student").pad_token is None
    encoder = DistilledEncoder.load(exported)
    assert encoder.tokenizer.pad_token == encoder.tokenizer.eos_token is not None
    embeddings, mask = encoder.encode(PROMPTS)
    assert embeddings.shape[0] == 3 and not mask[1].all()


def test_an_export_where_nothing_can_be_written_says_so_not_disk_space(recipe, tmp_path):
    if not Path("/proc/self").is_dir():
        pytest.skip("needs /proc, where even root cannot create a file")
    with pytest.raises(ForeignDirectoryError, match=r"cannot write the export under /proc"):
        check_export_target("/proc/an_export")

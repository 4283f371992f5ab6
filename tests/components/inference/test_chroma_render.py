"""Rendering with the tiny inline Chroma pipeline: sizes, determinism, masking, loading and errors."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from components.inference import InferenceError, build_chroma_pipeline, joint_attention_dim, render
from recipe_runner.loader import load_recipe
from schemas.inference import Inference

RECIPE = Path(__file__).parent / "assets" / "tiny_chroma.yaml"


@pytest.fixture(scope="module")
def spec() -> Inference:
    return load_recipe(RECIPE).recipe.inference


@pytest.fixture(scope="module")
def pipeline(spec):
    return build_chroma_pipeline(spec, "cpu")


def _conditioning(length: int = 8, visible: int = 5, seed: int = 0, width: int = 64):
    generator = torch.Generator().manual_seed(seed)
    embeds = torch.randn(1, length, width, generator=generator)
    mask = torch.zeros(1, length, dtype=torch.bool)
    mask[:, :visible] = True
    return embeds, mask


def _render(pipeline, embeds, mask, seed=0, width=64, height=64, negative=None):
    negative = negative or _conditioning(length=2, visible=2, seed=99)
    return render(pipeline, embeds, mask, *negative, steps=4, guidance=4.0, width=width, height=height, seed=seed)


def test_renders_the_requested_size(pipeline):
    embeds, mask = _conditioning()
    assert _render(pipeline, embeds, mask).size == (64, 64)
    assert _render(pipeline, embeds, mask, width=48, height=32).size == (48, 32)


def test_a_fixed_seed_gives_the_same_image(pipeline):
    embeds, mask = _conditioning()
    first = np.asarray(_render(pipeline, embeds, mask, seed=7))
    second = np.asarray(_render(pipeline, embeds, mask, seed=7))
    other = np.asarray(_render(pipeline, embeds, mask, seed=8))
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_the_prompt_changes_the_image(pipeline):
    first = np.asarray(_render(pipeline, *_conditioning(seed=1)))
    second = np.asarray(_render(pipeline, *_conditioning(seed=2)))
    assert not np.array_equal(first, second)


def test_masked_positions_do_not_change_the_image(pipeline):
    embeds, mask = _conditioning(length=10, visible=4)
    changed = embeds.clone()
    changed[:, 4:] = 100.0 * torch.randn_like(changed[:, 4:])
    reference = np.asarray(_render(pipeline, embeds, mask))
    assert np.array_equal(reference, np.asarray(_render(pipeline, changed, mask)))
    trimmed = np.asarray(_render(pipeline, embeds[:, :4], mask[:, :4])).astype(int)
    assert np.abs(reference - trimmed).max() <= 2, "padding length does not matter either (up to float rounding)"


def test_a_float_mask_is_treated_as_a_boolean_mask(pipeline):
    embeds, mask = _conditioning(length=10, visible=4)
    embeds[:, 4:] = 50.0
    as_bool = np.asarray(_render(pipeline, embeds, mask))
    as_float = np.asarray(_render(pipeline, embeds, mask.float()))
    assert np.array_equal(as_bool, as_float)


def test_width_mismatch_names_both_widths(pipeline):
    embeds, mask = _conditioning(width=32)
    with pytest.raises(InferenceError, match=r"width 32 .* joint_attention_dim 64"):
        _render(pipeline, embeds, mask)
    with pytest.raises(InferenceError, match=r"negative prompt embedding width 32"):
        _render(pipeline, *_conditioning(), negative=_conditioning(width=32))


def test_empty_prompt_and_bad_size_are_clear_errors(pipeline):
    embeds, mask = _conditioning()
    with pytest.raises(InferenceError, match="every token is masked out"):
        _render(pipeline, embeds, torch.zeros_like(mask))
    with pytest.raises(InferenceError, match="multiples of 16"):
        _render(pipeline, embeds, mask, width=40)
    with pytest.raises(InferenceError, match=r"expected embeddings \[1, L, D\]"):
        _render(pipeline, embeds.repeat(2, 1, 1), mask.repeat(2, 1))


def test_nan_embeddings_name_the_encoder_and_running_out_of_memory_the_size(pipeline, monkeypatch):
    """A damaged export was blamed on the guidance scale, even at guidance 0; an OOM was a traceback."""
    embeds, mask = _conditioning()
    embeds[0, 1, 3] = float("nan")
    with pytest.raises(InferenceError, match="the prompt's embeddings hold NaN or infinite values before any render"):
        _render(pipeline, embeds, mask)

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory: you")

    monkeypatch.setattr(type(pipeline), "__call__", out_of_memory)
    with pytest.raises(InferenceError, match=r"out of memory rendering 64x64 on cpu: lower --width/--height"):
        _render(pipeline, *_conditioning(), width=64)


def test_inline_weights_are_seeded(spec):
    first = build_chroma_pipeline(spec, "cpu").transformer.x_embedder.weight
    second = build_chroma_pipeline(spec, "cpu").transformer.x_embedder.weight
    assert torch.equal(first, second)


def test_a_saved_pipeline_directory_loads_and_renders_the_same(pipeline, spec, tmp_path):
    pipeline.save_pretrained(tmp_path / "chroma")
    local = Inference(pipeline=str(tmp_path / "chroma"), dtype="float32", steps=4, size=(64, 64))
    loaded = build_chroma_pipeline(local, "cpu")
    assert loaded.text_encoder is None and loaded.tokenizer is None
    assert joint_attention_dim(local) == joint_attention_dim(spec) == 64
    embeds, mask = _conditioning()
    assert np.array_equal(np.asarray(_render(pipeline, embeds, mask)), np.asarray(_render(loaded, embeds, mask)))


def test_an_uncached_hub_id_is_a_clear_error(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    message = "no local copy of 'someorg/not-a-chroma': download it first (hf download someorg/not-a-chroma)"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(InferenceError) as exc:
            build_chroma_pipeline(Inference(pipeline="someorg/not-a-chroma"), "cpu")
        assert str(exc.value) == message
        with pytest.raises(InferenceError) as exc:
            joint_attention_dim(Inference(pipeline="someorg/not-a-chroma"))
        assert str(exc.value) == message
    assert not caught, [str(w.message) for w in caught]  # the message alone, no library notice before it


def test_a_shared_recipe_pipeline_is_never_downloaded(monkeypatch):
    """Even with the hub reachable (HF_HUB_OFFLINE unset), the pipeline comes only from the local cache."""
    import diffusers

    calls = []

    def offline_only(*args, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        raise OSError("not in the local cache")

    monkeypatch.setattr(diffusers.ChromaPipeline, "from_pretrained", offline_only)
    monkeypatch.setattr(diffusers.ChromaTransformer2DModel, "load_config", offline_only)
    for load in (lambda spec: build_chroma_pipeline(spec, "cpu"), joint_attention_dim):
        with pytest.raises(InferenceError, match="no local copy of 'someorg/chroma'"):
            load(Inference(pipeline="someorg/chroma"))
    assert calls == [True, True]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"unet": {}}, "pipeline_config.unet: unknown key 'unet'"),
        ({"transformer": {"in_channels": 12}}, "must be 4 x vae.latent_channels"),
        (
            {"transformer": {"in_channels": 16, "no_such_option": 1}},
            "pipeline_config.transformer.no_such_option: unknown key 'no_such_option'",
        ),
    ],
)
def test_bad_inline_configs_are_clear_errors(spec, change, message):
    config = {**spec.pipeline_config, **change}
    bad = spec.model_copy(update={"pipeline_config": config})
    with pytest.raises(InferenceError, match=message):
        build_chroma_pipeline(bad, "cpu")


def test_missing_diffusers_says_how_to_install(spec, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(InferenceError, match=r"pip install 'recipe\[diffusers\]'"):
        build_chroma_pipeline(spec, "cpu")


def test_loading_diffusers_prints_no_transformers_warnings():
    """A fresh process, since transformers warns only once per process."""
    import subprocess

    code = (
        "import transformers.utils.logging as log\n"
        "from components.inference.chroma import import_diffusers\n"
        "import_diffusers()\n"
        "print(log.get_verbosity())\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "requires torchvision" not in done.stderr, done.stderr
    assert done.stdout.strip() == "30"  # the caller's verbosity (WARNING) is restored afterwards


@pytest.mark.parametrize(
    ("dtype", "advice"), [("float32", ""), ("float16", " or inference.dtype bfloat16 or float32 (float16 overflows)")]
)
def test_an_image_of_nan_pixels_is_refused_naming_what_to_change(spec, dtype, advice):
    """diffusers casts NaN pixels to arbitrary bytes; such an image is never handed on to be saved."""
    poisoned = build_chroma_pipeline(spec.model_copy(update={"dtype": dtype}), "cpu")
    with torch.no_grad():
        poisoned.vae.decoder.conv_out.bias.fill_(float("nan"))
    embeds, mask = _conditioning()
    negative = _conditioning(length=2, visible=2, seed=99)
    expected = (
        "prompt 1 'a fox' with t5: the render has NaN or infinite pixels, so no image was saved; "
        f"try a lower guidance (now 4: --guidance or inference.guidance){advice}"
    )
    with pytest.raises(InferenceError) as exc:
        render(poisoned, embeds, mask, *negative, 4, 4.0, 64, 64, 0, label="prompt 1 'a fox' with t5")
    assert str(exc.value) == expected


def test_a_local_pipeline_path_that_is_not_there_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(InferenceError) as exc:
        joint_attention_dim(Inference(pipeline=str(tmp_path / "my_chroma")))
    assert str(exc.value).startswith(f"inference.pipeline: local path '{tmp_path / 'my_chroma'}' does not exist")
    assert "hf download" not in str(exc.value)

"""Chroma pipeline without its text encoder: built from a hub id, a local directory or an inline tiny config.

diffusers is an optional heavy backend, imported only inside these functions.
"""

from __future__ import annotations

import gc
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from components.errors import UserFacingError
from components.inference.pipeline_config import pipeline_config_problems
from schemas.inference import Inference

_INSTALL = "install the `diffusers` extra: pip install 'recipe[diffusers]'"
_VAE_DEFAULTS: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "scaling_factor": 1.0,
    "shift_factor": 0.0,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}


class InferenceError(UserFacingError, ValueError):
    """Rendering cannot start or finish: the message says what to change (the CLI prints `error: ...` and exits
    with code 1, as for any setup problem)."""


@dataclass(frozen=True)
class Conditioning:
    """One prompt's text embeddings [1, L, D] and boolean mask [1, L] (True = visible to the transformer)."""

    embeds: torch.Tensor
    mask: torch.Tensor


def torch_dtype(name: str) -> torch.dtype:
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def release_memory(device: str | torch.device) -> None:
    """Return freed encoder memory before the image transformer loads (the caller drops its references first)."""
    gc.collect()
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.empty_cache()


@contextmanager
def _quiet_transformers():
    """diffusers' pipeline imports name transformers' image processors, which we never use; without torchvision
    transformers warns about each one, and a first `make demo` should not print warnings that ask nothing of anyone."""
    from transformers.utils import logging

    level = logging.get_verbosity()
    logging.set_verbosity_error()
    try:
        yield
    finally:
        logging.set_verbosity(level)


@contextmanager
def _quiet_hub():
    """diffusers passes huggingface_hub an argument it has deprecated; the warning came right before our own "no
    local copy" message and asked nothing of the person reading it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*", category=UserWarning)
        yield


def import_diffusers():
    with _quiet_transformers():
        try:
            import diffusers
        except ImportError:
            raise InferenceError(f"rendering needs diffusers: {_INSTALL}") from None
        if not hasattr(diffusers, "ChromaPipeline"):
            raise InferenceError(f"diffusers {diffusers.__version__} has no ChromaPipeline: {_INSTALL}")
    return diffusers


def joint_attention_dim(spec: Inference) -> int:
    """Text width the transformer expects, read from its config alone (no weights), to fail before encoding."""
    if spec.pipeline_config is not None:
        return int(dict(spec.pipeline_config.get("transformer") or {}).get("joint_attention_dim", 4096))
    try:
        with _quiet_hub():
            config = import_diffusers().ChromaTransformer2DModel.load_config(
                spec.pipeline, subfolder="transformer", local_files_only=True
            )
    except OSError as exc:
        raise _load_error(spec.pipeline, "cannot read the Chroma transformer config of", exc) from None
    return int(config.get("joint_attention_dim", 4096))


def _load_error(pipeline: str | None, what: str, exc: Exception) -> InferenceError:
    """Offline like every model load: a hub id missing from the local cache is never downloaded."""
    from components.models import ModelSourceError
    from components.models.source import download_command, locate

    try:
        location = locate(str(pipeline))
    except ModelSourceError as exc:  # a path that is not there: a download would not help
        return InferenceError(f"inference.pipeline: {exc}: give a hub id (org/name) or an existing pipeline folder")
    if location.kind == "hub":
        return InferenceError(f"no local copy of {pipeline!r}: download it first ({download_command(pipeline)})")
    return InferenceError(f"{what} {pipeline}: {exc}")


def check_width(encoder_width: int, spec_or_dim: Inference | int, encoder: str = "text encoder") -> None:
    """Encoder output width must equal the transformer's joint_attention_dim; name both numbers."""
    expected = spec_or_dim if isinstance(spec_or_dim, int) else joint_attention_dim(spec_or_dim)
    if encoder_width != expected:
        raise InferenceError(
            f"{encoder} width {encoder_width} does not match the Chroma transformer's joint_attention_dim "
            f"{expected}: the bolt-on must end at the teacher width the pipeline was trained with"
        )


def _inline_pipeline(config: dict[str, Any]):
    """Random-weight tiny pipeline, seeded without touching the global RNG."""
    d = import_diffusers()
    problems = pipeline_config_problems(config, d)
    if problems:
        raise InferenceError(
            "; ".join(".".join(("pipeline_config", *path)) + f": {message}" for path, message in problems)
        )
    vae_config = {**_VAE_DEFAULTS, **config["vae"]}
    blocks = len(vae_config.get("block_out_channels", (64,)))
    vae_config.setdefault("down_block_types", ["DownEncoderBlock2D"] * blocks)
    vae_config.setdefault("up_block_types", ["UpDecoderBlock2D"] * blocks)
    transformer_config = dict(config["transformer"])
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(config.get("seed", 0)))
            transformer = d.ChromaTransformer2DModel(**transformer_config)
            vae = d.AutoencoderKL(**vae_config)
        scheduler = d.FlowMatchEulerDiscreteScheduler(**dict(config.get("scheduler") or {}))
    except (TypeError, ValueError) as exc:
        raise InferenceError(f"pipeline_config: {exc}") from None
    pipeline = d.ChromaPipeline(
        scheduler=scheduler, vae=vae, text_encoder=None, tokenizer=None, transformer=transformer
    )
    pipeline.set_progress_bar_config(disable=True)
    return pipeline


def build_chroma_pipeline(spec: Inference, device: str | torch.device = "cpu", dtype: torch.dtype | None = None):
    """ChromaPipeline without text encoder or tokenizer (the embeddings come from our encoders).

    `spec.pipeline`: hub id (from the local HF cache when HF_HUB_OFFLINE=1) or a local directory.
    `spec.pipeline_config`: an inline tiny pipeline with random weights, e.g. (renders 64x64 in 4 steps on a
    CPU in ~0.03 s; `joint_attention_dim` must equal the teacher width)::

        pipeline_config:
          seed: 0
          transformer: {patch_size: 1, in_channels: 16, num_layers: 1, num_single_layers: 1,
                        attention_head_dim: 16, num_attention_heads: 2, joint_attention_dim: 64,
                        axes_dims_rope: [4, 6, 6], approximator_num_channels: 16,
                        approximator_hidden_dim: 32, approximator_layers: 1}
          vae: {latent_channels: 4, block_out_channels: [8, 8, 8, 8], layers_per_block: 1,
                norm_num_groups: 4, scaling_factor: 1.0, shift_factor: 0.0}
          scheduler: {}     # FlowMatchEulerDiscreteScheduler arguments

    `in_channels` is 4 x `latent_channels` and `axes_dims_rope` sums to `attention_head_dim`.
    `cpu_offload` uses enable_model_cpu_offload on CUDA (ignored on a CPU).
    """
    dtype = dtype or torch_dtype(spec.dtype)
    if spec.pipeline_config is not None:
        pipeline = _inline_pipeline(spec.pipeline_config)
        if dtype != torch.float32:
            pipeline.to(dtype=dtype)
    else:
        d = import_diffusers()
        try:
            with _quiet_hub():
                pipeline = d.ChromaPipeline.from_pretrained(
                    spec.pipeline, text_encoder=None, tokenizer=None, dtype=dtype, local_files_only=True
                )
        except (OSError, ValueError) as exc:
            raise _load_error(spec.pipeline, "cannot load the Chroma pipeline from directory", exc) from None
    if spec.cpu_offload and torch.device(device).type == "cuda":
        pipeline.enable_model_cpu_offload(device=device)
    else:
        pipeline.to(device)
    return pipeline


def _as_batch(embeds: torch.Tensor, mask: torch.Tensor, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if embeds.dim() == 2:
        embeds, mask = embeds.unsqueeze(0), mask.unsqueeze(0)
    if embeds.dim() != 3 or embeds.shape[0] != 1 or mask.shape != embeds.shape[:2]:
        raise InferenceError(
            f"{what}: expected embeddings [1, L, D] and mask [1, L], got {list(embeds.shape)} and {list(mask.shape)}"
        )
    if not bool(mask.any()) and what == "prompt":
        raise InferenceError("prompt: every token is masked out (empty prompt?): give some text to render")
    return embeds, mask


def render(
    pipeline,
    embeds: torch.Tensor,
    mask: torch.Tensor,
    negative_embeds: torch.Tensor,
    negative_mask: torch.Tensor,
    steps: int,
    guidance: float,
    width: int,
    height: int,
    seed: int,
    *,
    label: str = "prompt",
):
    """One image from precomputed embeddings; masks go in as booleans so padding stays out of attention.

    `label` names the prompt (and encoder) in the message refusing an image of NaN or infinite pixels, which
    diffusers would cast to garbage bytes without a word.
    """
    embeds, mask = _as_batch(embeds, mask, "prompt")
    negative_embeds, negative_mask = _as_batch(negative_embeds, negative_mask, "negative prompt")
    expected = int(pipeline.transformer.config.joint_attention_dim)
    check_width(int(embeds.shape[-1]), expected, "prompt embedding")
    check_width(int(negative_embeds.shape[-1]), expected, "negative prompt embedding")
    multiple = pipeline.vae_scale_factor * 2
    if width <= 0 or height <= 0 or width % multiple or height % multiple:
        raise InferenceError(f"image size {width}x{height}: width and height must be positive multiples of {multiple}")
    if steps <= 0:
        raise InferenceError(f"steps {steps}: must be > 0")
    for what, tensor in (("prompt", embeds), ("negative prompt", negative_embeds)):
        if not bool(torch.isfinite(tensor).all()):
            raise InferenceError(
                f"{label}: the {what}'s embeddings hold NaN or infinite values before any rendering: the encoder's "
                "weights are damaged or diverged; export again from a good checkpoint (`recipe export --checkpoint`)"
            )
    device = pipeline._execution_device
    dtype = pipeline.transformer.dtype
    try:
        result = pipeline(
            prompt_embeds=embeds.to(device=device, dtype=dtype),
            prompt_attention_mask=mask.to(device=device, dtype=torch.bool),
            negative_prompt_embeds=negative_embeds.to(device=device, dtype=dtype),
            negative_prompt_attention_mask=negative_mask.to(device=device, dtype=torch.bool),
            num_inference_steps=steps,
            guidance_scale=guidance,
            width=width,
            height=height,
            generator=torch.Generator(device="cpu").manual_seed(seed),
            output_type="np",
        )
    except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
        if not isinstance(exc, (torch.OutOfMemoryError, MemoryError)) and "can't allocate memory" not in str(exc):
            raise
        raise InferenceError(
            f"{label}: out of memory rendering {width}x{height} on {device}: lower --width/--height (or "
            "inference.size), or set inference.cpu_offload: true"
        ) from None
    pixels = result.images
    if not np.isfinite(pixels).all():
        raise InferenceError(_not_finite(label, guidance, dtype))
    return pipeline.image_processor.numpy_to_pil(pixels)[0]  # what output_type="pil" does


def _not_finite(label: str, guidance: float, dtype: torch.dtype) -> str:
    """Which settings to change: the guidance scale, and float16 (it overflows where bfloat16 does not)."""
    fixes = [f"a lower guidance (now {guidance:g}: --guidance or inference.guidance)"]
    if dtype == torch.float16:
        fixes.append("inference.dtype bfloat16 or float32 (float16 overflows)")
    return f"{label}: the render has NaN or infinite pixels, so no image was saved; try {' or '.join(fixes)}"


def encode_with_export(
    directory: str | Path,
    prompts: list[str],
    negative_prompt: str,
    device: str | torch.device,
    dtype: torch.dtype | None = None,
) -> tuple[list[Conditioning], Conditioning]:
    """Distilled (qwen) path: load the export, encode, and free it before the pipeline loads."""
    from components.export.distilled_encoder import DistilledEncoder
    from components.inference.t5_encoding import check_prompts

    check_prompts(prompts)
    if dtype is None:
        dtype = torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    encoder = DistilledEncoder.load(directory, device=device, dtype=dtype)
    try:
        embeds, mask = encoder.encode(prompts)
        negative = encoder.encode([negative_prompt], allow_empty=True, what="negative prompt")
    finally:
        del encoder
        release_memory(device)
    return split(embeds, mask), split(*negative)[0]


def split(embeds: torch.Tensor, mask: torch.Tensor) -> list[Conditioning]:
    """One [1, L_i, D] conditioning per prompt, trimmed to its visible (right-padded) positions, on the CPU."""
    out = []
    for row in range(embeds.shape[0]):
        visible = max(int(mask[row].sum()), 1)
        out.append(Conditioning(embeds[row : row + 1, :visible].cpu(), mask[row : row + 1, :visible].cpu()))
    return out

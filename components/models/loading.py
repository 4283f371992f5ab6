"""Teacher and student modules from a `ModelSource`: real weights from disk, random weights, or meta (for planning)."""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel, T5EncoderModel
from transformers.utils import logging as transformers_logging

from components.errors import UserFacingError, some_of
from components.models.fused_kernels import use_fused_kernels
from components.models.source import ModelSourceError, download_command, locate, resolve_config
from components.models.weight_files import weights_problem
from schemas.models import ModelSource

Role = Literal["teacher", "student"]
Attention = Literal["sdpa", "eager", "flash_attention_2"]

# (role, recipe `type`) -> transformers class: the closed registry of model kinds.
_CLASSES: dict[tuple[Role, str], type] = {
    ("teacher", "t5_encoder"): T5EncoderModel,
    ("student", "hidden_states"): AutoModel,
    ("teacher", "causal_lm"): AutoModelForCausalLM,
    ("student", "causal_lm"): AutoModelForCausalLM,
}
_AUTO_CLASSES = (AutoModel, AutoModelForCausalLM)  # these pick the architecture from the config, custom code included
_DEFAULT_TYPE: dict[Role, str] = {"teacher": "t5_encoder", "student": "hidden_states"}

# Attribute paths of the last normalisation layer, tried in order (T5 encoder, Qwen/Llama base, causal-LM wrappers).
_FINAL_NORM_PATHS = (
    "encoder.final_layer_norm",
    "final_layer_norm",
    "norm",
    "model.norm",
    "model.encoder.final_layer_norm",
)


def hidden_width(config: PretrainedConfig) -> int:
    """Width of the hidden states a model emits (`d_model` for T5, `hidden_size` for most others)."""
    for name in ("d_model", "hidden_size"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    text_config = getattr(config, "text_config", None)
    if isinstance(text_config, PretrainedConfig):
        return hidden_width(text_config)
    raise ModelSourceError(f"{type(config).__name__} has neither d_model nor hidden_size")


def final_norm(model: nn.Module) -> nn.Module:
    """The final norm whose weight sets the scale of the model's output (the bolt-on's RMSNorm copies it)."""
    for path in _FINAL_NORM_PATHS:
        module: object = model
        for name in path.split("."):
            module = getattr(module, name, None)
        if isinstance(module, nn.Module):
            return module
    raise ValueError(f"{type(model).__name__}: no final norm found (looked for {', '.join(_FINAL_NORM_PATHS)})")


@contextmanager
def quiet_transformers_bars() -> Iterator[None]:
    """No "Writing model shards" or "Loading weights" bar (export, `recipe infer`): the caller says what it did,
    and a bar per load only buries the lines that matter. The caller's setting is back afterwards."""
    was_enabled = transformers_logging.is_progress_bar_enabled()
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            transformers_logging.enable_progress_bar()


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode (no dropout) and no gradients: a frozen teacher costs weights only, no optimizer state."""
    model.eval()
    model.requires_grad_(False)
    return model


def model_class(source: ModelSource, role: Role) -> type:
    kind = getattr(source, "type", None) or _DEFAULT_TYPE[role]
    try:
        return _CLASSES[(role, kind)]
    except KeyError:
        raise ModelSourceError(f"no {role} model of type {kind!r}") from None


def _from_config(cls: type, config: PretrainedConfig, source: ModelSource, attention: str) -> PreTrainedModel:
    dtype = getattr(torch, source.dtype)
    if cls in _AUTO_CLASSES:
        return cls.from_config(
            config, dtype=dtype, attn_implementation=attention, trust_remote_code=source.trust_remote_code
        )
    return cls._from_config(config, dtype=dtype, attn_implementation=attention)


def _from_pretrained(cls: type, ref: str, source: ModelSource, attention: str) -> PreTrainedModel:
    kwargs: dict[str, object] = {"dtype": getattr(torch, source.dtype), "attn_implementation": attention}
    if cls in _AUTO_CLASSES:
        kwargs["trust_remote_code"] = source.trust_remote_code
    if Path(ref).is_dir() and (problem := weights_problem(Path(ref))) is not None:
        raise ModelSourceError(problem)
    try:
        model, info = cls.from_pretrained(
            ref, revision=source.revision, local_files_only=True, output_loading_info=True, **kwargs
        )
    except SafetensorError as exc:  # a cached hub copy cut short (a local folder was looked at above)
        raise ModelSourceError(f"{ref}: a weight file is damaged ({exc}); download it again") from exc
    except RuntimeError as exc:  # transformers' "size mismatch ... ignore_mismatched_sizes"
        if "size mismatch" not in str(exc) and "ignore_mismatched_sizes" not in str(exc):
            raise
        first = str(exc).strip().splitlines()[0]
        raise ModelSourceError(f"{ref}: its weights have other shapes than its config.json says ({first})") from None
    except OSError as exc:
        if Path(ref).exists():
            raise ModelSourceError(f"{ref}: cannot load weights: {exc}") from exc
        raise ModelSourceError(
            f"no local copy of {ref!r}: training needs its weights; download it first "
            f"({download_command(ref, source.revision)}) or give a local path / inline config"
        ) from exc
    # A pooler that an encoder's masked-LM checkpoint never saved is never read for hidden states.
    missing = sorted(key for key in info.get("missing_keys") or () if not key.startswith("pooler."))
    if missing:  # transformers would start them random and say so in a table: a model that is not the one named
        raise ModelSourceError(
            f"{ref}: {len(missing)} weights of {cls.__name__} are not in its files ({some_of(missing, 3)}), so they "
            "would start random: its config.json names another architecture than the files hold, or files are missing"
        )
    return model


class AttentionUnavailable(UserFacingError):
    """The recipe's attention kernel cannot run here; the message says what to set instead."""


def require_attention(attention: Attention, device: str | torch.device) -> None:
    """flash_attention_2 needs its package and a CUDA device: said before any weights load, where transformers
    would raise a traceback (or, for random weights, quietly use another kernel)."""
    if attention != "flash_attention_2":
        return
    if importlib.util.find_spec("flash_attn") is None:
        raise AttentionUnavailable(
            "hardware.attention: flash_attention_2 needs the flash-attn package, which is not installed here: "
            "install it on a CUDA machine (pip install flash-attn --no-build-isolation), or set "
            "hardware.attention: sdpa"
        )
    if torch.device(device).type != "cuda":
        raise AttentionUnavailable(
            f"hardware.attention: flash_attention_2 runs on CUDA GPUs only, and this runs on {device}: set "
            "hardware.attention: sdpa"
        )


def build_model(
    source: ModelSource,
    role: Role,
    *,
    device: str | torch.device = "cpu",
    meta: bool = False,
    attention: Attention = "sdpa",
    seed: int = 0,
    fused_kernels: bool = True,
) -> PreTrainedModel:
    """Teacher (`t5_encoder` -> T5EncoderModel) or student (`hidden_states` -> AutoModel, no LM head); either one
    as `causal_lm` -> AutoModelForCausalLM (logits family).

    `meta=True` allocates nothing and reads nothing but a config (planning). An inline config gets random
    weights from `seed` without touching the global RNG; a local dir or cached hub id loads real weights offline.
    `fused_kernels` swaps eager tanh-GELU blocks, and on CUDA RMSNorm, for one-kernel equivalents (see
    `fused_kernels`).
    """
    cls = model_class(source, role)
    if meta:
        config = resolve_config(source)
        with torch.device("meta"):
            return _from_config(cls, config, source, "sdpa" if attention == "flash_attention_2" else attention)
    require_attention(attention, device)
    if source.config is not None:
        config = resolve_config(source)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = _from_config(cls, config, source, attention)
    else:
        assert source.model is not None
        model = _from_pretrained(cls, locate(source.model).ref, source, attention)
    if fused_kernels:
        use_fused_kernels(model, norms=torch.device(device).type == "cuda")
    return model.to(device)

"""What transformers accepts in an inline architecture without complaint but builds wrong or fails on later.

A config class keeps any keyword it does not know as an attribute, so `num_hidden_layer: 2` leaves the default 28
layers in place; sizes of zero or below build empty or fail deep inside torch; grouped-query attention needs the
query heads to be a multiple of the key/value heads, which only the first forward pass finds out.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

from transformers import PretrainedConfig
from transformers.activations import ACT2FN

# Keys a config takes or stores without naming them in its signature, in every model type.
_COMMON = {"model_type", "transformers_version", "_name_or_path", "torch_dtype", "use_cache", "tie_word_embeddings"}


def _known_keys(config: PretrainedConfig) -> set[str]:
    cls = type(config)
    known = set(_COMMON) | set(cls.attribute_map) | set(cls().to_dict())
    for klass in cls.__mro__:
        if issubclass(klass, PretrainedConfig):
            known |= set(inspect.signature(klass.__init__).parameters) - {"self", "kwargs"}
    return known


def _t5_activation(config: PretrainedConfig) -> str | None:
    """T5 reads its activation out of `feed_forward_proj` ("gated-gelu" -> "gelu_new")."""
    return getattr(config, "dense_act_fn", None)


def _is_size(key: str) -> bool:
    return key.startswith("num_") or key.endswith(("_size", "_dim")) or key in {"d_model", "d_kv", "d_ff"}


def inline_config_problems(values: dict[str, Any], config: PretrainedConfig) -> list[tuple[str, str]]:
    """(key, message) for each problem of the inline `values` that `config` was built from."""
    problems: list[tuple[str, str]] = []
    known = _known_keys(config)
    stored = vars(config)
    for key in values:
        # A key transformers consumed (an older spelling it converts, say) is not stored under its own name.
        if key not in known and key in stored:
            close = difflib.get_close_matches(key, sorted(known - _COMMON), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append((key, f"unknown key {key!r} for model_type {config.model_type!r}{hint}"))
    for key, value in values.items():
        if _is_size(key) and isinstance(value, int) and not isinstance(value, bool) and value <= 0:
            problems.append((key, f"must be > 0, got {value}"))
    for key, activation in (("hidden_act", values.get("hidden_act")), ("feed_forward_proj", _t5_activation(config))):
        if key in values and isinstance(activation, str) and activation not in ACT2FN:
            close = difflib.get_close_matches(activation, sorted(ACT2FN), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            problems.append((key, f"unknown activation {activation!r}; {hint}(known: {', '.join(sorted(ACT2FN))})"))
    heads, kv_heads = values.get("num_attention_heads"), values.get("num_key_value_heads")
    if isinstance(heads, int) and isinstance(kv_heads, int) and heads > 0 and kv_heads > 0 and heads % kv_heads:
        problems.append(
            ("num_key_value_heads", f"{kv_heads} does not divide num_attention_heads {heads} (grouped-query attention)")
        )
    problems += _head_width_problems(values, config)
    problems += _special_token_problems(config)
    return problems


def _special_token_problems(config: PretrainedConfig) -> list[tuple[str, str]]:
    """Special-token ids a model type defaults to (gpt2's 50256) that a smaller inline vocabulary lacks: generation
    never meets its end token, and the export carries the ids."""
    vocab = getattr(config, "vocab_size", None)
    if not isinstance(vocab, int):
        return []
    problems = []
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        value = getattr(config, key, None)
        if isinstance(value, int) and not 0 <= value < vocab:
            problems.append((key, f"{value} is outside vocab_size {vocab}: set it to the tokenizer's id of that token"))
    return problems


def _head_width_problems(values: dict[str, Any], config: PretrainedConfig) -> list[tuple[str, str]]:
    """A head width the model derives as hidden_size // num_attention_heads: a remainder is dropped without a word
    (the projections then do not match), and rotary embeddings fail on the first forward at an odd width."""
    hidden, heads = getattr(config, "hidden_size", None), getattr(config, "num_attention_heads", None)
    if "head_dim" in values or not isinstance(hidden, int) or not isinstance(heads, int) or hidden <= 0 or heads <= 0:
        return []
    if getattr(config, "head_dim", None) not in (None, hidden // heads) or hasattr(config, "d_kv"):
        return []  # a head width of its own (qwen3's default, T5's d_kv)
    width, count = _written(values, config, "hidden_size"), _written(values, config, "num_attention_heads")
    if hidden % heads:
        even = heads * max(2, round(hidden / heads / 2) * 2)
        return [(width, f"{hidden} is not a multiple of {count} {heads}: each head would be {hidden / heads:g} "
                 f"wide; give a multiple, e.g. {even}")]  # fmt: skip
    rotary = getattr(config, "rope_parameters", None) is not None or hasattr(config, "rope_theta")
    if rotary and (hidden // heads) % 2:
        return [(width, f"{hidden} / {count} {heads} makes heads {hidden // heads} wide, and rotary position "
                 "embeddings need an even width: change either")]  # fmt: skip
    return []


def _written(values: dict[str, Any], config: PretrainedConfig, name: str) -> str:
    """The key a recipe used for a standard config attribute (`n_embd` for gpt2's hidden_size)."""
    own = type(config).attribute_map.get(name)
    return own if own in values or name not in values and own else name


def unknown_model_type_message(model_type: str, known: list[str]) -> str:
    close = difflib.get_close_matches(model_type, known, n=3)
    hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else " (see transformers' model list)"
    return f"unknown model_type {model_type!r}{hint}"

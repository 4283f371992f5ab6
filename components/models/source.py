"""Where a model comes from (inline config, local directory, hub id) and its architecture config, offline."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import transformers
from transformers import AutoConfig, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from components.errors import UserFacingError
from components.models.config_checks import unknown_model_type_message
from components.models.known_architectures import known_config_dict, known_hub_ids
from schemas.models import ModelSource


class ModelSourceError(UserFacingError):
    """A model, config or tokenizer cannot be found or read without the network; the message says what to do."""


@dataclass(frozen=True)
class Location:
    """Resolved `model`/`tokenizer` reference: a directory or file on disk, or a hub id (offline: cache only)."""

    kind: Literal["local", "hub"]
    ref: str


def locate(reference: str) -> Location:
    """A relative `org/name` is a hub id; everything else must exist locally.

    Never a folder of that name in the current directory: the loader has already made every path that exists
    beside the recipe absolute, and a recipe must mean the same models wherever it is run from."""
    if reference.count("/") == 1 and not reference.startswith((".", "/", "~")):
        return Location("hub", reference)
    path = Path(reference).expanduser()
    if path.exists():
        return Location("local", str(path))
    raise ModelSourceError(f"local path {reference!r} does not exist")


def download_command(hub_id: str, revision: str | None = None) -> str:
    """The shell line that puts `hub_id` into the local cache (the `hf` CLI of huggingface_hub)."""
    return f"hf download {hub_id}" + (f" --revision {revision}" if revision else "")


def unknown_hub_id_message(hub_id: str) -> str:
    known = {name.lower(): name for name in known_hub_ids()}
    close = difflib.get_close_matches(hub_id.lower(), list(known), n=1, cutoff=0.85)
    hint = f"did you mean {known[close[0]]!r}? If not, " if close else ""
    return (
        f"unknown hub id {hub_id!r}: no local copy and not in the known-architecture table; "
        f"{hint}download it first ({download_command(hub_id)}) or give a local path / inline config"
    )


def remote_code_refusal(source: ModelSource) -> str | None:
    """Why `source` must not be loaded without the runner's own `--trust-remote-code`, or None when it asks for no
    shipped code. The recipe's `trust_remote_code: true` only says the model needs it: a file someone sent is no
    permission to run code from it."""
    if not source.trust_remote_code:
        return None
    name = source.model or source.tokenizer or "its config"
    return f"runs Python code shipped with {name}; read that code, then pass --trust-remote-code to allow it"


def config_from_dict(values: dict[str, Any], origin: str) -> PretrainedConfig:
    """config.json contents -> the config class of its `model_type` (the dict is not modified)."""
    rest = dict(values)
    model_type = rest.pop("model_type", None)
    if not isinstance(model_type, str):
        raise ModelSourceError(f"{origin}: needs a `model_type` string, e.g. model_type: t5")
    if model_type not in CONFIG_MAPPING:
        raise ModelSourceError(f"{origin}: {unknown_model_type_message(model_type, list(CONFIG_MAPPING.keys()))}")
    try:
        return AutoConfig.for_model(model_type, **rest)
    except (ValueError, KeyError, TypeError) as exc:
        raise ModelSourceError(f"{origin}: {exc}") from exc


def _from_disk_or_cache(ref: str, source: ModelSource) -> PretrainedConfig:
    return AutoConfig.from_pretrained(
        ref, revision=source.revision, trust_remote_code=source.trust_remote_code, local_files_only=True
    )


def _read_config_json(config_file: Path) -> dict[str, Any]:
    """transformers reads any JSON and fails later, on a list or a string, in words about its own internals."""
    try:
        values = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelSourceError(f"{config_file}: not readable JSON ({exc}); copy or save the model again") from None
    if not isinstance(values, dict):
        raise ModelSourceError(
            f"{config_file}: holds a JSON {type(values).__name__}, not the mapping of settings a model config is "
            "(with model_type); copy or save the model again"
        )
    return values


def _needs_its_own_code(values: dict[str, Any], source: ModelSource, folder: str) -> None:
    """A config whose model type transformers does not know, naming classes of the folder's own code: in
    transformers' words the refusal asks for an argument no recipe user passes."""
    auto_map = values.get("auto_map")
    if source.trust_remote_code or not isinstance(auto_map, dict) or values.get("model_type") in CONFIG_MAPPING:
        return
    raise ModelSourceError(
        f"{folder}: its config names Python code shipped in the folder ({', '.join(sorted(map(str, auto_map)))} in "
        "auto_map), which transformers needs to build it; read that code, then set `trust_remote_code: true` "
        "beside this `model:` in the recipe and pass --trust-remote-code"
    )


def _check_model_type(model_type: object, config_file: Path) -> None:
    if not isinstance(model_type, str):
        raise ModelSourceError(
            f"{config_file}: has no `model_type` string, which names the architecture; save the model again with "
            'save_pretrained, or add the model_type of its architecture (e.g. "qwen3")'
        )
    if model_type not in CONFIG_MAPPING:
        known = unknown_model_type_message(model_type, list(CONFIG_MAPPING.keys()))
        raise ModelSourceError(
            f"{config_file}: {known}; an architecture newer than transformers {transformers.__version__} needs a "
            "newer transformers"
        )


def resolve_config(source: ModelSource) -> PretrainedConfig:
    """The architecture without touching the network: inline config, local dir, known table, then the HF cache.

    The known table describes each model's main branch, so a pinned `revision` prefers the cached copy.
    """
    if source.config is not None:
        return config_from_dict(source.config, "inline config")
    assert source.model is not None  # the schema guarantees one of model/config
    location = locate(source.model)
    if location.kind == "local":
        config_file = Path(location.ref) / "config.json"
        if not config_file.is_file():
            raise ModelSourceError(f"{location.ref}: not a model directory (no config.json)")
        values = _read_config_json(config_file)
        _needs_its_own_code(values, source, location.ref)
        if "auto_map" not in values:  # transformers' own words here are multi-line advice to reinstall it
            _check_model_type(values.get("model_type"), config_file)
        try:
            return _from_disk_or_cache(location.ref, source)
        except (OSError, ValueError) as exc:
            raise ModelSourceError(f"{location.ref}: cannot read config.json: {exc}") from exc
    known = known_config_dict(location.ref)
    if known is not None and source.revision is None:
        return config_from_dict(known, f"known architecture {location.ref}")
    try:
        return _from_disk_or_cache(location.ref, source)
    except (OSError, ValueError) as exc:
        if known is not None:
            return config_from_dict(known, f"known architecture {location.ref}")
        raise ModelSourceError(unknown_hub_id_message(location.ref)) from exc

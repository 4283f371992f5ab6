"""What is wrong with an inline `inference.pipeline_config`, found by `recipe validate` before hours of training.

`recipe infer` builds the tiny pipeline from it only after training; a misspelt key would then fail, or worse,
be dropped by diffusers' config handling. The same checks serve both verbs, each problem at its key.
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

SECTIONS = {"transformer", "vae", "scheduler", "seed"}
# The diffusers classes each mapping is passed to, by name (diffusers is imported only when it is installed).
_CLASSES = {
    "transformer": "ChromaTransformer2DModel",
    "vae": "AutoencoderKL",
    "scheduler": "FlowMatchEulerDiscreteScheduler",
}

Problem = tuple[tuple[str, ...], str]


def _unknown(key: str, known: set[str], takes: str) -> str:
    close = difflib.get_close_matches(key, sorted(known), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown key {key!r}{hint} ({takes})"


def _arguments(diffusers: Any, section: str) -> set[str] | None:
    cls = getattr(diffusers, _CLASSES[section], None)
    if cls is None:
        return None
    parameters = inspect.signature(cls.__init__).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):  # takes anything: nothing to check
        return None
    return {p.name for p in parameters} - {"self"}


def pipeline_config_problems(config: dict[str, Any], diffusers: Any = None) -> list[Problem]:
    """(path under pipeline_config, message) for each problem; the keys of each mapping are checked against
    the diffusers class it is passed to when `diffusers` (the module) is given."""
    problems: list[Problem] = []
    for key in sorted(set(config) - SECTIONS):
        problems.append(((key,), _unknown(key, SECTIONS, "pipeline_config takes transformer, vae, scheduler, seed")))
    for needed in ("transformer", "vae"):
        if not isinstance(config.get(needed), dict):
            problems.append(((), f"needs a `{needed}` mapping (the {_CLASSES[needed]} arguments)"))
    if problems:
        return problems
    latent = config["vae"].get("latent_channels", 4)
    channels = config["transformer"].get("in_channels", 64)
    if channels != 4 * latent:
        where = ("transformer", "in_channels") if "in_channels" in config["transformer"] else ("transformer",)
        problems.append(
            (where, f"in_channels {channels} must be 4 x vae.latent_channels ({4 * latent}): latents are packed in 2x2")
        )
    for section in ("transformer", "vae", "scheduler") if diffusers is not None else ():
        values = config.get(section) or {}
        known = _arguments(diffusers, section) if isinstance(values, dict) else None
        for key in sorted(set(values) - known) if known is not None else ():
            problems.append(((section, key), _unknown(key, known, f"an argument of {_CLASSES[section]}")))
    return problems

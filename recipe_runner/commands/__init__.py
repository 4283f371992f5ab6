"""CLI verbs beyond validate/show/schema/plan, one module each."""

from __future__ import annotations

import importlib

import click

_MODULES = ("run", "cache", "infer", "align_report", "export", "bench")


def _load() -> list[click.Command]:
    commands = []
    for name in _MODULES:
        try:
            module = importlib.import_module(f"recipe_runner.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("recipe_runner.commands"):
                continue
            raise
        commands.append(getattr(module, name.replace("-", "_")))
    return commands


COMMANDS = _load()

"""Shared pieces of the CLI verbs: the --set option and turning recipe problems into exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from recipe_runner.errors import RecipeError

EXIT_RECIPE_ERROR = 2

overrides_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a recipe value, e.g. --set stages.0.lr.student=1e-5 (repeatable).",
)


def exit_with_problems(exc: RecipeError) -> None:
    """Print every problem on stderr and exit with code 2."""
    for problem in exc.problems:
        click.echo(str(problem), err=True)
    count = len(exc.problems)
    click.echo(f"{count} problem{'s' if count != 1 else ''} found.", err=True)
    sys.exit(EXIT_RECIPE_ERROR)


def reports_recipe_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a RecipeError into its messages on stderr and exit code 2, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RecipeError as exc:
            exit_with_problems(exc)

    return wrapper

"""Shared pieces of the CLI verbs: the --set option, and problems reported without a traceback (a recipe's
problems: exit code 2; a missing model, file, cache or package: `error: ...`, exit code 1)."""

from __future__ import annotations

import contextlib
import functools
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

from components.errors import UserFacingError
from recipe_runner.errors import RecipeError
from recipe_runner.processes import first_process

# What `recipe infer` and `recipe export` never read: a prompt file or a teacher cache in any state is no reason
# to refuse them (see checks.semantic_problems).
NEITHER_DATA_NOR_CACHE = frozenset({"data", "cache"})
EXIT_RECIPE_ERROR = 2
EXIT_SETUP_ERROR = 1

overrides_option = click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY.PATH=VALUE",
    help="Override a recipe value, e.g. --set stages.0.lr.student=5e-4 (repeatable).",
)

trust_remote_code_option = click.option(
    "--trust-remote-code",
    "allow_remote_code",
    is_flag=True,
    help="Allow the Python code shipped with a model whose recipe (or export) sets trust_remote_code: true to run. "
    "Read that code first: a recipe's own setting is not enough.",
)


def exit_with_problems(exc: RecipeError) -> None:
    """Print every problem on stderr and exit with code 2."""
    for problem in exc.problems:
        click.echo(str(problem), err=True)
    count = len(exc.problems)
    click.echo(f"{count} problem{'s' if count != 1 else ''} found.", err=True)
    sys.exit(EXIT_RECIPE_ERROR)


def os_error_in_words(exc: OSError) -> str:
    """One line: the path, what the system said, and where to look."""
    paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
    said = exc.strerror or str(exc)
    return f"{paths}: {said} (check that the place exists, is writable and has room)" if paths else said


def reports_recipe_errors(func: Callable[..., Any]) -> Callable[..., Any]:
    """A RecipeError becomes its messages and exit code 2; any other UserFacingError `error: ...` and exit code 1."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RecipeError as exc:
            if not first_process():  # the same problems in every process: the first says them
                sys.exit(EXIT_RECIPE_ERROR)
            exit_with_problems(exc)
        except UserFacingError as exc:
            if exc.alike_in_every_process and not first_process():
                sys.exit(EXIT_SETUP_ERROR)
            click.echo(f"error: {exc}", err=True)
            sys.exit(EXIT_SETUP_ERROR)
        except BrokenPipeError:  # not a place: the reader of the output went away (see the command group)
            raise
        except OSError as exc:  # a read-only, full or vanished place the verb had no more to say about
            click.echo(f"error: {os_error_in_words(exc)}", err=True)
            sys.exit(EXIT_SETUP_ERROR)

    return wrapper


@contextlib.contextmanager
def interrupt_goes_on(said: str, rerun: str) -> Iterator[None]:
    """Ctrl-C (or a scheduler's stop) in work that keeps what it finished: `interrupted{said}`, then this command's
    own line (`rerun`, with its --set values) that goes on from there; once, from the first process of a launch,
    and exit code 130 as shells expect."""
    try:
        yield
    except KeyboardInterrupt:
        if first_process():
            with contextlib.suppress(OSError):  # a terminal that hung up takes no more output
                click.echo(f"\ninterrupted{said}; `{rerun}` goes on from there", err=True)
        sys.exit(130)

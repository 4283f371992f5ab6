"""`recipe` command line: every verb reports recipe problems as file:line:col and exits with code 2."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys

import click

from recipe_runner.cli_support import (
    exit_with_problems,
    overrides_option,
    reports_recipe_errors,
    trust_remote_code_option,
)
from recipe_runner.errors import RecipeError
from recipe_runner.processes import launched_processes
from recipe_runner.stop_signals import stops_as_interrupts


class _RecipeGroup(click.Group):
    """Ctrl-C, SIGTERM or a hangup where a verb has no handling of its own (the trainer saves and exits 130 itself)
    exits 130 too, as shells expect of an interrupt, instead of click's `Aborted!` with code 1, or no cleanup."""

    def invoke(self, ctx: click.Context):
        try:
            with stops_as_interrupts():
                return super().invoke(ctx)
        except BrokenPipeError:
            # The reader of the output went away (`recipe show FILE | head`): stop without a word, as `cat` would,
            # with a shell's code for a pipe that closed; stdout goes to /dev/null so that exiting flushes nothing.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(EXIT_BROKEN_PIPE)
        except KeyboardInterrupt:
            with contextlib.suppress(OSError):  # a terminal that hung up takes no more output
                click.echo(
                    "interrupted; every file is written under a temporary name until complete, so none was left "
                    "half-written",
                    err=True,
                )
            sys.exit(130)


@click.group(cls=_RecipeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="recipe")
@click.pass_context
def main(ctx: click.Context) -> None:
    """Declarative model distillation: validate, plan, run and render from one YAML recipe."""
    verb = ctx.invoked_subcommand
    if verb not in (None, *_SHARED_BY_PROCESSES) and launched_processes() > 1:
        # A launcher of several processes would make each one print the same report, and each one write the same
        # export or image: the first does the work alone, and says so.
        if os.environ.get("RANK", "0") != "0":
            sys.exit(0)
        click.echo(f"note: `recipe {verb}` runs in one process; the others of this launch left", err=True)
    # transformers and diffusers import torchao whenever it is installed; the notices that follow (prebuilt
    # kernels for other torch builds, a deprecation between torch and torchao, torchao tensor types for
    # quantized checkpoints) are for their developers, not for a recipe's user.
    for name in _LIBRARY_DEVELOPER_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


_SHARED_BY_PROCESSES = ("run", "cache")  # the verbs that divide their work among a launcher's processes
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a program a closed pipe ended
_LIBRARY_DEVELOPER_LOGGERS = ("torchao", "torch.utils._pytree", "diffusers.quantizers.torchao.torchao_quantizer")


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path())  # a directory among them: said with the rest
@overrides_option
@trust_remote_code_option
def validate(files: tuple[str, ...], overrides: tuple[str, ...], allow_remote_code: bool) -> None:
    """Check recipes; print every problem with its file:line:col."""
    from components.models.downloads import download_note
    from recipe_runner.loader import load_recipe
    from recipe_runner.recipe_warnings import as_warning, recipe_warnings

    problems = []
    for file in files:
        try:
            loaded, checked = load_recipe(file, overrides, allow_remote_code=allow_remote_code), True
        except RecipeError as exc:
            problems += exc.problems
            # A recipe whose schema holds but whose checks fail (a missing file, say) has its warnings said too:
            # fixing the errors should not reveal a second list.
            try:
                loaded, checked = load_recipe(file, overrides, check=False), False
            except RecipeError:
                continue
        if checked:
            click.echo(f"{file}: ok")
        for warning in recipe_warnings(loaded):
            click.echo(as_warning(warning), err=True)
        note = download_note(loaded.recipe.teacher, loaded.recipe.student) if checked else None
        if note:
            click.echo(f"{file}: {note}" if len(files) > 1 else note, err=True)  # whose note, among several
    if problems:
        exit_with_problems(RecipeError(problems))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@overrides_option
@reports_recipe_errors
def show(file: str, overrides: tuple[str, ...]) -> None:
    """Print the fully resolved recipe (after extends, --set and defaults)."""
    from ruamel.yaml import YAML

    from recipe_runner.loader import load_recipe

    loaded = load_recipe(file, overrides, check=False)
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(json.loads(loaded.recipe.model_dump_json()), sys.stdout)


@main.command()
def schema() -> None:
    """Print the JSON Schema of recipes (for editor completion)."""
    from components.registry import recipe_class
    from recipe_runner.editor_schema import editor_schema

    click.echo(json.dumps(editor_schema(recipe_class().model_json_schema()), indent=2))


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@overrides_option
@trust_remote_code_option
@reports_recipe_errors
def plan(file: str, overrides: tuple[str, ...], allow_remote_code: bool) -> None:
    """Build every model on the meta device and print sizes, trainable parts and a memory estimate."""
    from components.models.downloads import download_note
    from recipe_runner.loader import load_recipe
    from recipe_runner.next_commands import NextCommands
    from recipe_runner.plan import build_plan, format_plan
    from recipe_runner.recipe_warnings import recipe_warnings

    loaded = load_recipe(file, overrides, allow_remote_code=allow_remote_code)
    commands = NextCommands.of_this_process(file, overrides, allow_remote_code)
    placed = tuple(str(warning) for warning in recipe_warnings(loaded))
    click.echo(format_plan(build_plan(loaded.recipe, commands), placed))
    note = download_note(loaded.recipe.teacher, loaded.recipe.student)
    if note:
        click.echo(note, err=True)


def _register_optional_commands() -> None:
    """Commands live in their own modules so that `recipe validate` never imports torch-heavy code."""
    from recipe_runner.commands import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_register_optional_commands()

if __name__ == "__main__":
    main()

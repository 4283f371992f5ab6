"""`recipe bench`: measure what a recipe costs on this machine, before renting the big one."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import click

from recipe_runner.cli_support import overrides_option, reports_recipe_errors, trust_remote_code_option

_SECTIONS = ("training", "teacher", "aligner", "loader", "inference")


def _earlier_result(target: Path, option: str) -> bool:
    """Whether an existing `target` is what an earlier bench wrote there (which a new one replaces)."""
    from recipe_runner.bench.timing import PROFILE_HEADER

    try:
        with target.open(encoding="utf-8") as handle:
            if option == "--profile":
                return handle.readline().rstrip("\n") == PROFILE_HEADER
            found = json.load(handle)
    except (OSError, UnicodeDecodeError, ValueError):
        return False
    return isinstance(found, dict) and {"recipe", "environment", "flop_formula"} <= found.keys()


def _writable_target(path: str | None, option: str) -> None:
    """Fail before minutes of measuring, not after them, when a result could not be written, or would replace a
    file that no earlier bench wrote (the recipe itself, say)."""
    if path is None:
        return
    target = Path(path)
    if option == "--json" and target.suffix.lower() != ".json":
        raise click.BadParameter(f"{target}: name a .json file", param_hint=option)
    if target.is_file() and not _earlier_result(target, option):
        raise click.BadParameter(
            f"{target} exists and is not an earlier `recipe bench {option}` result, which is all it replaces: "
            "choose another path, or move that file away",
            param_hint=option,
        )
    # Its folder is made when the result is written: a bench refused before then leaves no folder behind.
    nearest = next(p for p in (target.parent.absolute(), *target.parent.absolute().parents) if p.exists())
    if not nearest.is_dir():
        raise click.BadParameter(f"cannot create its folder: {nearest} is a file", param_hint=option)
    if target.is_dir() or (target.exists() and not os.access(target, os.W_OK)):
        raise click.BadParameter(f"{target} cannot be written", param_hint=option)
    try:  # as root, os.access says yes to read-only or pseudo file systems: a real file says what is so
        with tempfile.TemporaryFile(dir=nearest):
            pass
    except OSError as exc:
        raise click.BadParameter(f"{target} cannot be written: {exc.strerror or exc}", param_hint=option) from None


@click.command("bench")
@click.argument("file", type=click.Path(dir_okay=False))
@overrides_option
@trust_remote_code_option
@click.option("--small", is_flag=True, help="Shrunk architectures and short runs: seconds on a CPU (not real sizes).")
@click.option(
    "--full-depth", is_flag=True, help="With --small: keep every layer (real launch and compile counts, slower)."
)
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Timed training steps (default 20; 4 small).")
@click.option(
    "--json",
    "json_path",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write every figure to this .json file (it replaces only an earlier bench's result, never another file).",
)
@click.option(
    "--peak-tflops",
    type=click.FloatRange(min=0, max=1e6, min_open=True),  # NaN passes a range: refused where it is used
    default=None,
    help="Peak TFLOP/s of this device for MFU (default: datasheet table for H100/H200/A100).",
)
@click.option(
    "--profile",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write the costliest kernels of the timed training steps here (replaces only an earlier --profile's "
    "file; not the --json file).",
)
@click.option("--only", multiple=True, type=click.Choice(_SECTIONS), help="Run only these sections (repeatable).")
@reports_recipe_errors
def bench(
    file: str,
    overrides: tuple[str, ...],
    allow_remote_code: bool,
    small: bool,
    full_depth: bool,
    steps: int | None,
    json_path: str | None,
    peak_tflops: float | None,
    profile: str | None,
    only: tuple[str, ...],
) -> None:
    """Training tokens/s, MFU and memory; teacher cache tokens/s and size; aligner, loader and inference speed."""
    from recipe_runner.bench.report import format_report, write_json
    from recipe_runner.bench.run import run_bench
    from recipe_runner.bench.spec import BenchSpec
    from recipe_runner.loader import load_recipe

    if profile is not None and only and "training" not in only:
        raise click.UsageError("--profile profiles the training steps: add --only training, or drop --profile")
    if peak_tflops is not None and peak_tflops != peak_tflops:  # NaN, which click's range lets through
        raise click.BadParameter("nan is not a number of TFLOP/s", param_hint="--peak-tflops")
    if full_depth and not small:
        raise click.UsageError("--full-depth keeps the layers of --small models; without --small every layer is kept")
    _writable_target(json_path, "--json")
    _writable_target(profile, "--profile")
    if json_path is not None and profile is not None and Path(json_path).absolute() == Path(profile).absolute():
        raise click.UsageError(f"--json and --profile both name {json_path}: the one would replace the other")
    loaded = load_recipe(file, overrides, allow_remote_code=allow_remote_code, unread=frozenset({"cache"}))
    sections = list(only or _SECTIONS)
    if loaded.recipe.family == "logits":
        sections = list(only or ("training",))
        others = [section for section in sections if section != "training"]
        if others:
            raise click.UsageError(
                f"--only {' '.join(others)}: these sections measure the embedding family (teacher cache, aligner, "
                "loader, image-encoder inference); a logits recipe is measured by its training step: --only training"
            )
    spec = BenchSpec(
        small=small,
        full_depth=full_depth,
        steps=steps,
        peak_tflops=peak_tflops,
        profile=profile,
        only=sections,
    )
    report = run_bench(loaded.recipe, spec, progress=lambda name: click.echo(f"bench: {name} ...", err=True))
    report = report.model_copy(update={"recipe_file": str(Path(file).absolute()), "overrides": list(overrides)})
    click.echo(format_report(report), nl=False)
    if json_path is not None:
        write_json(report, Path(json_path))
        click.echo(f"wrote {json_path}")

"""Semantic checks of what a recipe names on disk: data files, local model weights, tokenizer paths, output and
cache directories, a local inference pipeline; all of them found by `validate` rather than once models load."""

from __future__ import annotations

import os
from fnmatch import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING

from components.errors import some_of
from recipe_runner.errors import Problem
from recipe_runner.loader import LoadedRecipe
from schemas.models import ModelSource

if TYPE_CHECKING:
    from transformers import PretrainedConfig


def weights_problems(loaded: LoadedRecipe, configs: dict[str, PretrainedConfig]) -> list[Problem]:
    """Weights a local `model` folder lacks or holds damaged; a role whose config is unreadable is reported once."""
    from components.models.weight_files import weights_problem

    problems = []
    for role in configs:
        source: ModelSource = getattr(loaded.recipe, role)
        folder = Path(source.model).expanduser() if source.model is not None and source.config is None else None
        problem = weights_problem(folder) if folder is not None and folder.is_dir() else None
        if problem is not None:
            problems.append(loaded.problem((role, "model"), problem))
    return problems


def data_problems(loaded: LoadedRecipe) -> list[Problem]:
    """The prompt files, read as a run reads them (needs the `data` section alone)."""
    from components.data.prompts import DataFileError, data_file_problem, read_prompts

    data = loaded.recipe.data
    problems = []
    for name in ("train", "eval"):
        spec = getattr(data, name)
        problem = None if spec is None else data_file_problem(Path(spec.path))
        if spec is not None and problem is None:
            try:  # empty, not UTF-8, a bad .jsonl record: found here rather than once the models are loaded
                read_prompts(spec)
            except DataFileError as exc:
                problem = str(exc)
        if problem is not None:  # at the path itself where written apart (a --set of data.train.path)
            path = ("data", name, "path")
            problems.append(loaded.problem(path if path in loaded.tree.positions else ("data", name), problem))
    if data.eval is not None and data.eval_fraction > 0:
        message = "has no effect while data.eval is set: give held-out prompts in one of the two, not both"
        problems.append(loaded.problem(("data", "eval_fraction"), message))
    return problems


def file_problems(loaded: LoadedRecipe, unread: frozenset[str] = frozenset()) -> list[Problem]:
    """Paths of the recipe as a run uses them; `unread` (see checks.semantic_problems) leaves out the data files
    and the cache's contents for verbs that never read them."""
    recipe = loaded.recipe
    problems = data_problems(loaded) if "data" not in unread else []
    for role in ("teacher", "student"):
        source: ModelSource = getattr(recipe, role)
        for field in ("tokenizer",):  # a missing `model` path is reported once, by _widths reading its config
            value = getattr(source, field)
            if value is not None and Path(value).is_absolute() and not Path(value).exists():
                problems.append(loaded.problem((role, field), f"path not found: {value}"))
    cache = recipe.teacher_cache
    directories = {("output", "dir"): recipe.output.dir, **({("teacher", "cache", "dir"): cache.dir} if cache else {})}
    answers = _answers_dir(recipe)
    if answers is not None:
        directories[("teacher", "answers", "dir")] = answers
    for where, directory in directories.items():
        # the directory itself or the nearest existing one above it, which the run would create it in
        nearest = next(p for p in (Path(directory).absolute(), *Path(directory).absolute().parents) if p.exists())
        if nearest.is_file():
            problems.append(loaded.problem(where, f"{nearest} is a file, not a directory: choose another path"))
        elif not nearest.is_dir():  # /dev/null, a pipe, a socket
            problems.append(
                loaded.problem(where, f"{nearest} is a device or pipe, not a directory: choose another path")
            )
        elif where == ("output", "dir") and not os.access(nearest, os.W_OK | os.X_OK):  # a cache may be read-only
            problems.append(
                loaded.problem(where, f"{nearest} is not writable by you: choose another output.dir for the run")
            )
    if cache is not None and Path(cache.dir) == Path(recipe.output.dir):
        problems.append(loaded.problem(("teacher", "cache", "dir"), "the cache must not share the output directory"))
    if answers is not None and _inside(Path(answers), Path(recipe.output.dir)):
        message = (
            "the answers must not be in the output directory (a run keeps only its own files there): give them a "
            "folder of their own"
        )
        problems.append(loaded.problem(("teacher", "answers", "dir"), message))
    problems += _foreign_directory_problems(loaded)
    problems += _pipeline_problems(loaded)
    problems += _loader_worker_problems(loaded)
    if not {"data", "cache"} & unread:
        problems += _cached_prompts_problems(loaded)
    return problems


def _loader_worker_problems(loaded: LoadedRecipe) -> list[Problem]:
    """Loader workers that could not pass batches back on this machine (a TMPDIR too long for a socket)."""
    from recipe_runner.trainer.loader_workers import worker_socket_problem

    problem = worker_socket_problem() if loaded.recipe.hardware.num_workers > 0 else None
    return [loaded.problem(("hardware", "num_workers"), problem)] if problem is not None else []


# What `recipe run` (and `recipe infer`'s default images) write in output.dir, and `recipe cache` in cache.dir;
# temporary names and lock files are dot-names.
_RUN_WRITES = ("resolved_recipe.yaml", "resolved_recipe.until-step-*.yaml", "versions.json", "metrics.jsonl",
               "checkpoints", "export", "images", "tensorboard", ".*")  # fmt: skip
_CACHE_WRITES = ("train", "eval", ".*")
_SPLIT_WRITES = ("manifest.json", "shard-*.safetensors", ".*")
_ANSWERS_WRITES = ("train.json", "train.jsonl", "train.jsonl.*", "eval.json", "eval.jsonl", "eval.jsonl.*", ".*")


def _inside(path: Path, directory: Path) -> bool:
    """`path` is `directory` or somewhere below it."""
    path, directory = path.absolute(), directory.absolute()
    return directory == path or directory in path.parents


def _answers_dir(recipe) -> str | None:
    """teacher.answers.dir of a causal-LM teacher that writes answers (sequence-level distillation)."""
    answers = getattr(recipe.teacher, "answers", None)
    return answers.dir if answers is not None else None


def _reads_as_a_runs(entry: Path) -> bool:
    """Whether a file of a run's own name holds what a run writes there: a person's `metrics.jsonl` or
    `versions.json` of another tool would be replaced by the first run (a resume that finds no checkpoint too)."""
    import json

    from ruamel.yaml import YAML

    if not entry.is_file():
        return True
    try:
        with entry.open(encoding="utf-8") as file:
            head = file.read(1 << 16)
        if entry.name == "metrics.jsonl":
            lines = [line for line in head.splitlines()[:5] if line.strip()]
            rows = [json.loads(line) for line in lines[:-1] or lines]  # the last line may be cut off here
            return all(isinstance(row, dict) and "step" in row for row in rows)
        if entry.name == "versions.json":
            found = json.loads(head)
            return isinstance(found, dict) and "torch" in found
        if entry.name.startswith("resolved_recipe"):
            found = YAML(typ="safe", pure=True).load(head)
            return isinstance(found, dict) and "recipe" in found
    except Exception:  # unreadable, not UTF-8, not JSON or YAML (ruamel's errors are no ValueErrors): not ours
        return False
    return True


def _not_written_by_us(directory: Path, marker: str, names: tuple[str, ...]) -> list[str]:
    """What an existing directory holds that the verb writing it would not have written (splits of a cache looked
    into as well); nothing when it holds the verb's lock file: it is then one of its directories, and what else
    a person keeps there is theirs and never touched."""
    if not directory.is_dir() or (directory / marker).exists():
        return []
    foreign = []
    try:
        for entry in sorted(directory.iterdir()):
            if not any(fnmatch(entry.name, pattern) for pattern in names):
                foreign.append(entry.name)
            elif names is _RUN_WRITES and not _reads_as_a_runs(entry):
                foreign.append(f"{entry.name} (not a run's, by what it holds)")
            elif names is _CACHE_WRITES and entry.is_dir() and not entry.name.startswith("."):
                inside = sorted(entry.iterdir())
                foreign += [
                    f"{entry.name}/{e.name}" for e in inside if not any(fnmatch(e.name, p) for p in _SPLIT_WRITES)
                ]
    except OSError:  # a folder this user cannot list: the run's own writes will say what is wrong
        return []
    return foreign


def _foreign_directory_problems(loaded: LoadedRecipe) -> list[Problem]:
    """An output.dir or cache.dir that already holds someone's files (`~`, a project folder, `/etc`): a run
    writes and replaces files of its own names there, so only a new, empty or earlier directory of its kind is
    taken."""
    from recipe_runner.teacher_answers import ANSWERS_LOCK
    from recipe_runner.teacher_cache import CACHE_LOCK
    from recipe_runner.trainer.run_dir import LOCK_NAME

    recipe, problems = loaded.recipe, []
    places = [
        (("output", "dir"), recipe.output.dir, LOCK_NAME, _RUN_WRITES, "a run's checkpoints, logs and export", "runs")
    ]
    if recipe.teacher_cache is not None:
        where, directory = ("teacher", "cache", "dir"), recipe.teacher_cache.dir
        places.append((where, directory, CACHE_LOCK, _CACHE_WRITES, "the teacher cache's shards", "cache"))
    answers = _answers_dir(recipe)
    if answers is not None:
        where, what = ("teacher", "answers", "dir"), "the teacher's answers"
        places.append((where, answers, ANSWERS_LOCK, _ANSWERS_WRITES, what, "answers"))
    out = Path(recipe.output.dir)
    for name, kind in (("metrics.jsonl", "file"), ("resolved_recipe.yaml", "file"), ("checkpoints", "folder")):
        found = out / name
        if found.exists() and found.is_dir() != (kind == "folder"):
            other = "a folder" if found.is_dir() else "a file"
            message = f"{found} is {other} where a run keeps its {name} {kind}: move it away"
            problems.append(loaded.problem(("output", "dir"), message))
    for where, directory, marker, names, what, parent in places:
        if Path(directory).resolve() == Path.home().resolve():  # its dotfiles would pass for a run's own names
            message = f"{directory} is your home folder: give {what} a folder of its own (e.g. ~/{parent}/NAME)"
            problems.append(loaded.problem(where, message))
            continue
        foreign = _not_written_by_us(Path(directory), marker, names)
        export = next((m for m in ("encoder.json", "distilled.json") if (Path(directory) / m).is_file()), None)
        if foreign and names is _RUN_WRITES and export is not None:
            message = (
                f"{directory} is an export (it holds {export}), not a run folder: give the run a folder of its own; "
                "its export is written inside it, at export/"
            )
            problems.append(loaded.problem(where, message))
        elif foreign and names is _CACHE_WRITES and (Path(directory) / "manifest.json").is_file():
            message = (
                f"{directory} is the {Path(directory).name} split of a cache (it holds a manifest.json and shards), "
                f"not a cache folder: point teacher.cache.dir at its parent, {Path(directory).parent}"
            )
            problems.append(loaded.problem(where, message))
        elif foreign:
            shown = some_of(foreign, 5)
            problems.append(
                loaded.problem(
                    where,
                    f"{directory} already holds files that recipe did not write ({shown}); {what} would go beside "
                    f"them and replace any of the same names: choose a new or empty folder (e.g. {parent}/NAME)",
                )
            )
    return problems


def _cached_prompts_problems(loaded: LoadedRecipe) -> list[Problem]:
    """A cache split made from other prompts than the recipe's data now (the usual edit: new data, same cache)."""
    import json

    from components.cache.manifest import read_manifest
    from components.cache.reuse import reuse_hint
    from components.data.prompts import DataFileError, prompts_digest
    from recipe_runner.trainer.parts import split_prompts

    cache = loaded.recipe.teacher_cache
    if cache is None or not Path(cache.dir).is_dir():
        return []
    try:
        prompts = dict(zip(("train", "eval"), split_prompts(loaded.recipe), strict=True))
    except DataFileError:
        return []  # the data files' own problem is reported at data.train / data.eval
    problems = []
    for split, texts in prompts.items():
        try:
            manifest = read_manifest(Path(cache.dir) / split)
        except (OSError, json.JSONDecodeError):
            continue  # an unreadable manifest is reported with the cache's other problems
        if manifest is not None and texts and manifest.get("prompts_sha256") != prompts_digest(texts):
            message = (
                f"the cache {Path(cache.dir) / split} was made from other prompts than data.{split} now "
                f"({manifest.get('count')} cached, {len(texts)} now): delete that folder and rerun `recipe cache`, "
                + reuse_hint(cache.dir)
            )
            problems.append(loaded.problem(("teacher", "cache", "dir"), message))
    return problems


def _pipeline_problems(loaded: LoadedRecipe) -> list[Problem]:
    """A local `inference.pipeline` must be a diffusers pipeline folder; a hub id is looked for by `recipe infer`."""
    from components.models import ModelSourceError
    from components.models.source import locate

    inference = loaded.recipe.inference
    if inference is None or inference.pipeline is None:
        return []
    try:
        location = locate(inference.pipeline)
    except ModelSourceError as exc:
        return [loaded.problem(("inference", "pipeline"), f"{exc}: give a hub id (org/name) or an existing folder")]
    folder = Path(location.ref)
    if location.kind == "local" and not (folder / "model_index.json").is_file():
        message = f"{folder} is not a diffusers pipeline folder (no model_index.json); give the folder it was saved to"
        return [loaded.problem(("inference", "pipeline"), message)]
    return []

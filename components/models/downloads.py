"""Which hub ids a command needs that are not in the local Hugging Face cache, all found before any is loaded.

Loading finds them one at a time: each missing id is a failed run, a multi-GB download and another try. Asking
the cache for every one first turns that into one message with one download command.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from components.models.source import ModelSourceError, download_command, locate
from schemas.models import ModelSource


@dataclass(frozen=True)
class Needed:
    """A hub id at a recipe field (`teacher.model`, `student.tokenizer`), at an optional revision."""

    field: str
    hub_id: str
    revision: str | None


def needed_from(role: str, source: ModelSource, weights: bool = True, tokenizer: bool = True) -> list[Needed]:
    """The hub ids `source` is loaded from: its model (for `weights`) and its tokenizer (for `tokenizer`, the
    model's own unless `tokenizer:` is set). Local paths and inline configs need no download."""
    found = []
    if weights and source.model is not None:
        found.append(Needed(f"{role}.model", source.model, source.revision))
    reference = source.tokenizer or source.model
    if tokenizer and reference is not None:
        field = f"{role}.tokenizer" if source.tokenizer else f"{role}.model"
        found.append(Needed(field, reference, source.revision))
    return [need for need in found if _is_hub_id(need.hub_id)]


def _is_hub_id(reference: str) -> bool:
    try:
        return locate(reference).kind == "hub"
    except ModelSourceError:  # a local path that does not exist: loading says so in its own words
        return False


def _in_cache(need: Needed) -> bool:
    from huggingface_hub import snapshot_download

    try:
        snapshot_download(need.hub_id, revision=need.revision, local_files_only=True)
    except Exception:  # LocalEntryNotFoundError and kin: no usable snapshot on this machine
        return False
    return True


def not_downloaded(needs: Iterable[Needed]) -> list[Needed]:
    """Those of `needs` with no snapshot in the local cache, each hub id once (first field that names it)."""
    seen: set[tuple[str, str | None]] = set()
    missing = []
    for need in needs:
        key = (need.hub_id, need.revision)
        if key in seen:
            continue
        seen.add(key)
        if not _in_cache(need):
            missing.append(need)
    return missing


def download_commands(missing: list[Needed]) -> str:
    """One shell line for them all (`hf download` takes one repository at a time)."""
    return " && ".join(download_command(need.hub_id, need.revision) for need in missing)


def missing_in_words(missing: list[Needed]) -> str:
    """`teacher.model 'google/t5-v1_1-xxl', student.model 'Qwen/...'`."""
    return ", ".join(f"{need.field} {need.hub_id!r}" for need in missing)


def require_downloaded(needs: Iterable[Needed], verb: str) -> None:
    """Refuse, naming every missing id at once and the one command that fetches them."""
    missing = not_downloaded(needs)
    if missing:
        raise ModelSourceError(
            f"{verb} needs what this machine has not downloaded: {missing_in_words(missing)}; fetch "
            f"{'it' if len(missing) == 1 else 'them'} with `{download_commands(missing)}` (or point the recipe at "
            f"local folders){_folders_here(missing)}"
        )


def _folders_here(missing: list[Needed]) -> str:
    """A hub id that is also a folder in the current directory was most likely meant as that folder."""
    folders = [need.hub_id for need in missing if Path(need.hub_id).is_dir()]
    if not folders:
        return ""
    return (
        f"; {', '.join(folders)} is also a folder in the current directory, but a recipe's paths are read from the "
        "recipe file's folder, so that it means the same wherever it runs: write the path from there (./ or ../) "
        "or an absolute one"
    )


def download_note(teacher: ModelSource, student: ModelSource) -> str | None:
    """For `validate` and `plan`, which need no weights: what a run on this machine would still have to fetch."""
    missing = not_downloaded([*needed_from("teacher", teacher), *needed_from("student", student)])
    if not missing:
        return None
    return (
        f"note: not downloaded on this machine yet: {missing_in_words(missing)}; `recipe run` needs "
        f"{'it' if len(missing) == 1 else 'them'} and never downloads: {download_commands(missing)}"
    )

"""What an export may replace: only an earlier export of the same kind, and only the files it wrote itself."""

from __future__ import annotations

import json
import tempfile
from functools import partial
from pathlib import Path

from components.atomic_files import ForeignDirectoryError, check_replaceable

CHECKPOINT_MARKER = "trainer_state.json"  # recipe_runner.trainer.checkpoint.COMPLETE: a training checkpoint


def files_in(directory: Path) -> list[str]:
    """Every file under `directory`, relative to it: what an export lists as its own before writing its manifest."""
    return sorted(path.relative_to(directory).as_posix() for path in directory.rglob("*") if not path.is_dir())


def added_by_hand(directory: Path, manifest: str, legacy_names: tuple[str, ...] = ()) -> list[str]:
    """What is in an earlier export that it did not write itself: every file beyond its manifest's list. An export
    from before the list is judged by its top level: anything but `legacy_names` and the manifest."""
    try:
        written = json.loads((directory / manifest).read_text(encoding="utf-8")).get("files")
    except (OSError, ValueError, AttributeError):
        written = None
    if written is None:
        known = {manifest, *legacy_names}
        return sorted(entry.name for entry in directory.iterdir() if entry.name not in known)
    return sorted(set(files_in(directory)) - set(written) - {manifest})


def check_target(out_dir: str | Path, rules: dict) -> None:
    """Refuse, before any work, an `out_dir` that holds anything but an earlier export (which the export replaces),
    or that lies inside a training checkpoint, which a run replaces or prunes whole."""
    out_dir = Path(out_dir).resolve()
    if out_dir == out_dir.parent:
        raise ForeignDirectoryError(f"{out_dir} is the file system's root, not an export folder: choose another --out")
    home = next(p for p in out_dir.parents if p.exists())  # the export is built beside its target, then renamed
    try:
        with tempfile.TemporaryFile(dir=home):
            pass
    except OSError as exc:
        raise ForeignDirectoryError(
            f"cannot write the export under {home} ({exc.strerror or exc}): choose another --out (or output.dir)"
        ) from None
    for parent in out_dir.parents:  # ours: not any trainer_state.json (HF Trainer writes one in its output root)
        if all((parent / name).is_file() for name in (CHECKPOINT_MARKER, "rng.safetensors", "state.json")):
            raise ForeignDirectoryError(
                f"{out_dir} is inside the training checkpoint {parent}, which a run replaces or prunes: choose "
                "another --out (an export beside the checkpoints, e.g. in output.dir, stays)"
            )
    check_replaceable(out_dir, **rules)


def replace_rules(manifest: str, legacy_names: tuple[str, ...] = ()) -> dict:
    """The keyword arguments of atomic_directory / check_replaceable for an export marked by `manifest`."""
    return {
        "marker": manifest,
        "kind": "export",
        "remedy": "choose another --out (or output.dir)",
        "added": partial(added_by_hand, manifest=manifest, legacy_names=legacy_names),
    }

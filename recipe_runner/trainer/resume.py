"""Whether a checkpoint can continue under the recipe as it is now, and what the recipe now changes.

A checkpoint records the resolved recipe and a digest of the train prompts it was trained on. On `--resume`
the weights, moments and data position come from the checkpoint, and every hyperparameter from the recipe:
lowering the learning rate after a divergence and resuming must take effect. What would make the saved state
meaningless (other train prompts, fewer stages, another set of trained parts, another weight format) stops the
run before anything is loaded or overwritten; every other difference is listed so the log says what changed.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import torch

from components.errors import UserFacingError
from schemas import Recipe
from schemas.stages import PARTS, default_min_lr

if TYPE_CHECKING:
    from recipe_runner.trainer.checkpoint import Position

_SHOWN = 8


class ResumeMismatchError(UserFacingError, RuntimeError):
    """The checkpoint's state cannot continue under this recipe; the message lists why and what to do."""

    alike_in_every_process = True  # every process compares the same checkpoint with the same recipe


@dataclass
class ResumeReport:
    """Differences between the checkpoint's recipe and this one: the blocking ones and the rest."""

    blocking: list[str] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


def run_record(
    recipe: Recipe, train_prompts_sha256: str, eval_prompts_sha256: str | None = None, processes: int = 1
) -> dict[str, Any]:
    """What a checkpoint stores about the run that wrote it: the recipe, digests of the prompts it trained and
    evaluated on (a file edited in place changes no recipe value), and how many processes trained it (which
    multiplies what a step takes, though no recipe value says so)."""
    return {
        "recipe": recipe.model_dump(mode="json"),
        "train_prompts_sha256": train_prompts_sha256,
        "eval_prompts_sha256": eval_prompts_sha256,
        "processes": processes,
    }


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
        out = {}
        for index, item in enumerate(value):
            out.update(_flatten(item, f"{prefix}.{index}"))
        out[f"{prefix}.#"] = len(value)
        return out
    return {prefix: value}


def _moved_root(before: Any, after: Any) -> tuple[str, str] | None:
    """For two absolute paths that end alike (a project folder moved or mounted elsewhere), the folders that
    differ: ('/old/project', '/new/place/project'); None otherwise."""
    if not (isinstance(before, str) and isinstance(after, str) and before.startswith("/") and after.startswith("/")):
        return None
    old, new = PurePosixPath(before).parts, PurePosixPath(after).parts
    same = 0
    while same < min(len(old), len(new)) - 1 and old[-1 - same] == new[-1 - same]:
        same += 1
    if same == 0:
        return None
    return str(PurePosixPath(*old[: len(old) - same])), str(PurePosixPath(*new[: len(new) - same]))


def _differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Each changed value in a line; paths that all moved by one folder (the project moved) in one line."""
    flat_saved, flat_now = _flatten(saved), _flatten(now)
    changed = [key for key in sorted(set(flat_saved) | set(flat_now)) if flat_saved.get(key) != flat_now.get(key)]
    roots = {key: _moved_root(flat_saved.get(key), flat_now.get(key)) for key in changed}
    moves, count = set(roots.values()) - {None}, sum(root is not None for root in roots.values())
    lines = []
    if len(moves) == 1 and count > 1:
        old, new = moves.pop()
        lines.append(f"paths: {old} -> {new} ({count} of them, the same names under another folder)")
        changed = [key for key in changed if roots[key] is None]
    for key in changed:
        before, after = flat_saved.get(key, "(not set)"), flat_now.get(key, "(not set)")
        name = key.removesuffix(".#") + (" (count)" if key.endswith(".#") else "")
        lines.append(f"{name}: {before!r} -> {after!r}")
    return lines


def compare(
    record: dict[str, Any],
    recipe: Recipe,
    train_prompts_sha256: str,
    stage_index: int,
    eval_prompts_sha256: str | None = None,
    processes: int | None = None,
) -> ResumeReport:
    """Blocking differences first (see the module docstring), then every other changed recipe value, and eval
    prompts that changed under the same recipe values."""
    saved = record["recipe"]
    now = recipe.model_dump(mode="json")
    report = ResumeReport()
    if record.get("train_prompts_sha256") not in (None, train_prompts_sha256):
        report.blocking.append(
            f"the train prompts ({recipe.data.train}) are not the ones it was trained on: its data position "
            "would point at other prompts"
        )
    if saved.get("recipe") != now["recipe"]:
        report.blocking.append(
            f"it was trained by recipe {saved.get('recipe')!r}, not {now['recipe']!r} (a recipe that extends another "
            "inherits its output.dir; if this one was only renamed, put its name back)"
        )
    if stage_index >= len(recipe.stages):
        report.blocking.append(
            f"it was saved in stage {stage_index}, but the recipe now has {len(recipe.stages)} stage(s)"
        )
    else:
        saved_name = saved["stages"][stage_index]["name"] if stage_index < len(saved["stages"]) else None
        if saved_name != now["stages"][stage_index]["name"]:  # a stage added or removed before it
            report.blocking.append(
                f"it was saved in stage {stage_index} {saved_name!r}, and stage {stage_index} is now "
                f"{now['stages'][stage_index]['name']!r}: stages before the saved one must stay as they were"
            )
        for name in ("trainable", "student_lora"):
            before = saved["stages"][stage_index].get(name) if stage_index < len(saved["stages"]) else None
            after = now["stages"][stage_index][name]
            if before != after:
                report.blocking.append(f"stages.{stage_index}.{name}: {before!r} -> {after!r}")
    weights = ("hardware", "trained_weights")
    if saved[weights[0]][weights[1]] != now[weights[0]][weights[1]]:
        report.blocking.append(
            f"hardware.trained_weights: {saved['hardware']['trained_weights']!r} -> "
            f"{now['hardware']['trained_weights']!r} (the optimizer state is stored in the old format)"
        )
    report.blocking += _order_and_vocabulary_changes(saved, now)
    report.changes = [_finished(change, stage_index) for change in _differences(saved, now)]
    report.changes += _floors_that_follow(saved, now)
    before = record.get("processes")
    if None not in (before, processes) and before != processes:
        step = [
            spec["hardware"]["batch_size"] * spec["hardware"]["grad_accum"] * count
            for spec, count in ((saved, before), (now, processes))
        ]
        report.changes.append(
            f"processes: {before} -> {processes} (an optimizer step takes up to {step[0]} -> {step[1]} prompts)"
        )
    saved_eval = record.get("eval_prompts_sha256")
    said = any(change.startswith((EVAL_CHANGE, "data.eval.")) for change in report.changes)
    if None not in (saved_eval, eval_prompts_sha256) and saved_eval != eval_prompts_sha256 and not said:
        source = (recipe.data.eval or recipe.data.train).path
        report.changes.append(f"{EVAL_CHANGE} the prompts in {source} are not the ones it was evaluated on")
    return report


EVAL_CHANGE = "data.eval:"  # how a change list names the eval prompts as a whole


def _finished(change: str, stage_index: int) -> str:
    """A change to a stage the run has finished is said to be history: it does not train again, yet the run's
    resolved recipe now shows the new value (the old one stays in resolved_recipe.until-step-N.yaml)."""
    key = change.split(":", 1)[0]
    index = key.split(".")[1] if key.startswith("stages.") else ""
    if index.isdigit() and int(index) < stage_index:
        return f"{change} (stage {index} is finished: no effect on this run)"
    return change


def _floors_that_follow(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """A min_lr left unset follows its lr: a changed lr moves the schedule's floor too, which no recipe value
    shows."""
    lines = []
    for index, (before, after) in enumerate(zip(saved["stages"], now["stages"], strict=False)):
        for part in PARTS:
            old, new = before.get("lr", {}).get(part), after["lr"].get(part)
            unset = before.get("min_lr", {}).get(part) is None and after["min_lr"].get(part) is None
            if unset and None not in (old, new) and old != new:
                floors = f"{default_min_lr(old)!r} -> {default_min_lr(new)!r}"
                lines.append(f"stages.{index}.min_lr.{part} (unset, so lr/10): {floors}")
    return lines


def eval_loss_reweighed(report: ResumeReport | None, stage_index: int) -> list[str]:
    """The changes that make the eval loss of the stage resumed in another measure than the one its `best` was
    kept by: its loss terms (which, their weights, their settings) and the eval prompts."""
    if report is None:
        return []
    prefixes = (f"stages.{stage_index}.losses.", f"stages.{stage_index}.losses (count)", "data.eval.", EVAL_CHANGE)
    return [change for change in report.changes if change.startswith(prefixes)]


def forget_incomparable_best(
    report: ResumeReport | None, stage_index: int, position: Position, keep_best: bool
) -> str | None:
    """Compared across two measures, `best` would stay on the old weights forever (or be replaced by any): when
    the eval loss is measured otherwise from here on, the next evaluation replaces it. Returns the note saying so."""
    reweighed = eval_loss_reweighed(report, stage_index)
    if not (reweighed and position.best_eval is not None and keep_best):
        return None
    note = (
        f"note: the eval loss is measured otherwise from here on ({listed(reweighed)}): `best`, kept at eval/loss "
        f"{position.best_eval:.4g}, is replaced by the next evaluation and compared with that one after (copy it "
        "elsewhere now to keep it)"
    )
    position.best_eval = None
    return note


def _order_and_vocabulary_changes(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Another student tokenizer reads every saved embedding row as another token; another seed reshuffles the
    epoch the saved data position points into (some prompts seen twice, others never). The same tokenizer
    folder found under a moved project (same name, another parent) is no change."""
    blocking = [change] if (change := _tokenizer_change(saved, now)) else []
    shuffled = saved["data"].get("shuffle", True), now["data"].get("shuffle", True)
    if shuffled[0] != shuffled[1]:
        blocking.append(
            f"data.shuffle: {shuffled[0]!r} -> {shuffled[1]!r} (the saved data position is in an epoch ordered the "
            "other way)"
        )
    if now["data"].get("shuffle", True) and saved["hardware"].get("seed") != now["hardware"].get("seed"):
        blocking.append(
            f"hardware.seed: {saved['hardware'].get('seed')!r} -> {now['hardware'].get('seed')!r} (the saved data "
            "position is in an epoch shuffled by the old seed)"
        )
    return blocking


def _tokenizer_change(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    before, after = saved["student"].get("tokenizer"), now["student"].get("tokenizer")
    if before == after or (_moved_root(before, after) and PurePosixPath(before).name == PurePosixPath(after).name):
        return None
    return f"student.tokenizer: {before!r} -> {after!r} (the saved embeddings belong to the old one)"


# Student values that decide what its trained weights mean without changing their shapes.
_MEANING = {
    "layer": "the bolt-on learned from that layer's hidden states",
    "bidirectional": "the student learned with that attention",
}


def meaning_changes(record: dict[str, Any], recipe: Recipe, stage_index: int) -> list[str]:
    """What an export under this recipe would read otherwise than the checkpoint (saved in stage `stage_index`)
    was trained: another tokenizer, another student layer, another attention, or another scale of the LoRA
    adapters it holds unmerged; each fits the weights' shapes, so only the record shows it."""
    saved, now = record["recipe"], recipe.model_dump(mode="json")
    found = [change] if (change := _tokenizer_change(saved, now)) else []
    for name, why in _MEANING.items():
        before, after = saved["student"].get(name), now["student"].get(name)
        if before != after:
            found.append(f"student.{name}: {before!r} -> {after!r} ({why})")
    stages = saved["stages"], now["stages"]
    if stage_index < min(map(len, stages)):
        lora = [(stage[stage_index].get("student_lora") or {}) for stage in stages]
        for name in ("alpha", "r"):
            if lora[0].get(name) != lora[1].get(name):
                found.append(
                    f"stages.{stage_index}.student_lora.{name}: {lora[0].get(name)!r} -> {lora[1].get(name)!r} (the "
                    "adapters are merged at alpha / r)"
                )
    return found


def listed(items: list[str]) -> str:
    """At most a screenful of changes on one line, and how many more there are."""
    shown = items[:_SHOWN]
    more = len(items) - len(shown)
    return "; ".join(shown) + (f"; and {more} more" if more > 0 else "")


def with_its_recipe(checkpoint: Path, verb: str, *extra: str, program: str = "recipe") -> str:
    """The command line that runs `verb` under the recipe a checkpoint was trained with, on the run folder that
    holds it: its resolved recipe names the folder it was written in, which a copied or moved run is not in.
    `program`: what starts it (a run under a launcher resumes under the same launcher)."""
    run_dir = checkpoint.resolve().parent.parent
    recipe = str(run_dir / "resolved_recipe.yaml")
    return f"{program} {shlex.join([verb, recipe, '--set', f'output.dir={run_dir}', *extra])}"


def _remedy(checkpoint: Path, program: str) -> str:
    again = with_its_recipe(checkpoint, "run", "--resume", program=program)
    return (
        f"Resume with the recipe it was trained with, `{again}`, or start a new run in another output.dir "
        "(--set output.dir=...)"
    )


def check_resumable(checkpoint: Path, report: ResumeReport, program: str = "recipe") -> None:
    """Stop with every blocking difference, before any file of the run is touched."""
    if report.blocking:
        raise ResumeMismatchError(
            f"{checkpoint} cannot continue under this recipe: {listed(report.blocking)}. {_remedy(checkpoint, program)}"
        )


# Recipe values that decide the names and shapes of the saved weights (the teacher's width shapes the bolt-on's
# last layer and the projections of hidden_states losses).
_ARCHITECTURE = ("bolt_on.", "student.model", "student.config", "student.revision", "teacher.model", "teacher.config")


def _reshapes(change: str) -> bool:
    key = change.split(":", 1)[0]
    mapped_layers = ".losses." in key and (".layers" in key or key.endswith(".#"))  # projections come and go
    return change.startswith(_ARCHITECTURE) or ".student_lora" in key or mapped_layers


def architecture_changes(report: ResumeReport | None) -> list[str]:
    """The changed recipe values that rename or reshape saved weights (the LoRA adapters of a stage, and the
    projections of hidden_states losses, included)."""
    if report is None:
        return []
    return [change for change in report.changes if _reshapes(change)]


def weights_do_not_fit(
    checkpoint: Path, report: ResumeReport | None, program: str = "recipe"
) -> ResumeMismatchError | None:
    """When the checkpoint's weights do not load into the model this recipe builds and the recipe's architecture
    changed since the save, that change is the cause, not damage to the checkpoint; None when it did not change."""
    changed = architecture_changes(report)
    if not changed:
        return None
    return ResumeMismatchError(
        f"{checkpoint} holds weights of another architecture than this recipe builds; changed since it was saved: "
        f"{listed(changed)}. {_remedy(checkpoint, program)}"
    )


def describe_changes(report: ResumeReport) -> str | None:
    """One line for the log: the recipe values that differ from the checkpoint's and now apply."""
    if not report.changes:
        return None
    return "resuming with recipe changes (they apply from here on): " + "; ".join(report.changes)


def hyperparameters(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """Every setting of each parameter group except its tensors and its current lr."""
    return [{k: v for k, v in group.items() if k not in ("params", "lr")} for group in optimizer.param_groups]


def reapply(optimizer: torch.optim.Optimizer, scheduler, settings: list[dict[str, Any]], base_lrs: list[float]) -> None:
    """After loading a checkpoint, put back the recipe's settings (loading restored the saved ones) and the lr the
    recipe's schedule gives at the restored step, so the optimizer moments and the step count are all that carry
    over."""
    for group, values in zip(optimizer.param_groups, settings, strict=True):
        group.update(values)
    scheduler.base_lrs = list(base_lrs)
    for group, base, factor in zip(optimizer.param_groups, base_lrs, scheduler.lr_lambdas, strict=True):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]

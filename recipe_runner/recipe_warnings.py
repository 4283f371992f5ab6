"""Settings that are allowed but do nothing, or not what they seem: said at their file:line by `validate`, `plan`
and `run`, never refused. A quick `--set stages.0.trainable=[bolt_on]` that freezes the student must still run,
though it leaves the student's learning rate unused."""

from __future__ import annotations

from recipe_runner.errors import Problem
from recipe_runner.loader import LoadedRecipe
from schemas.stages import PARTS, ConstantSchedule


def recipe_warnings(loaded: LoadedRecipe) -> list[Problem]:
    """In recipe order: per stage, a learning rate (or floor) for a part the stage does not train, a trained part
    whose rate is 0, and a warmup at least as long as a stage counted in steps (one counted in epochs is sized
    from the data when it starts: `recipe run` says so then); then bolt-on layers that no stage trains."""
    warnings = []
    for index, stage in enumerate(loaded.recipe.stages):
        here = ("stages", index)
        unused = [
            (setting, part)
            for setting in ("lr", "min_lr")
            for part in PARTS
            if part not in stage.trainable and getattr(stage, setting).get(part) is not None
        ]
        for setting, part in unused:
            warnings.append(loaded.problem(here + (setting, part), _unused_rate(loaded, index, part)))
        for part in stage.trainable:
            if stage.lr.get(part) == 0:
                warnings.append(
                    loaded.problem(
                        here + ("lr", part),
                        f"0: {part} is trained but never moves; to freeze it, take it out of trainable (its optimizer "
                        "state then takes no memory)",
                    )
                )
        if isinstance(stage.schedule, ConstantSchedule):
            for part in stage.trainable:
                if stage.min_lr.get(part) is not None:
                    warnings.append(
                        loaded.problem(here + ("min_lr", part), "unused: a constant schedule stays at lr after warmup")
                    )
        if stage.steps is not None and stage.warmup_steps >= stage.steps:
            warnings.append(
                loaded.problem(
                    here + ("warmup_steps",),
                    f"{stage.warmup_steps} is not below the stage's {stage.steps} steps: the learning rate never "
                    "reaches lr",
                )
            )
    warnings += _without_evaluation(loaded)
    warnings += _alignment_of_one_tokenizer(loaded)
    warnings += _no_checkpoint_before_the_end(loaded)
    warnings += _half_weights_in_a_float32_run(loaded)
    named = loaded.tree.position_of(("recipe",))
    if not named.is_override and named.file not in ("<recipe>", str(loaded.file)):
        warnings.append(
            loaded.problem(
                ("recipe",),
                f"this name, {loaded.recipe.recipe!r}, is inherited from the recipe this one extends: runs, exports "
                "and images of both are filed under it (and in one output.dir unless this one sets its own): give "
                f"{loaded.file.name} its own `recipe:` name",
            )
        )
    if loaded.recipe.bolt_on.present and not any("bolt_on" in stage.trainable for stage in loaded.recipe.stages):
        warnings.append(
            loaded.problem(
                ("bolt_on",),
                "no stage trains these layers: they keep their initial (random) weights, which the export carries; "
                "add bolt_on to a stage's trainable",
            )
        )
    return warnings


def _no_checkpoint_before_the_end(loaded: LoadedRecipe) -> list[Problem]:
    """A run counted in steps that no step count or clock checkpoints before its end: a crash, a kill or a lost
    node in its last hours loses all of it. (A stage in epochs is sized from the data when it starts.)"""
    output, stages = loaded.recipe.output, loaded.recipe.stages
    if output.save_every_minutes is not None or any(stage.steps is None for stage in stages):
        return []
    total = sum(stage.steps for stage in stages)
    if output.save_every_steps < total:
        return []
    return [
        loaded.problem(
            ("output", "save_every_steps"),
            f"{output.save_every_steps} is not below the run's {total} steps, and save_every_minutes is null: "
            "nothing is checkpointed before the end, so a crash or kill loses the whole run; lower it, or set "
            "save_every_minutes",
        )
    ]


def _half_weights_in_a_float32_run(loaded: LoadedRecipe) -> list[Problem]:
    """`precision: fp32` beside a model dtype left at its bfloat16 default: the trained parts become float32, but
    the teacher, and a student frozen or trained only through LoRA, keep computing in bfloat16, which is rarely
    what a person asking for fp32 means."""
    recipe = loaded.recipe
    if recipe.hardware.precision != "fp32":
        return []
    warnings = []
    for role in ("teacher", "student"):
        model = getattr(recipe, role)
        if "dtype" in model.model_fields_set or model.dtype == "float32":
            continue
        if role == "student" and recipe.trains_student_weights:
            continue  # its weights become float32 masters whatever they were loaded in
        kept = "" if role == "teacher" else " (frozen or LoRA-adapted weights)"
        warnings.append(
            loaded.problem(
                ("hardware", "precision"),
                f"fp32, but {role}.dtype is left at its default {model.dtype}: the {role}{kept} still computes in "
                f"{model.dtype}; write {role}.dtype: float32 for a float32 run, or {role}.dtype: {model.dtype} to "
                "keep it and not be told again",
            )
        )
    return warnings


def _alignment_of_one_tokenizer(loaded: LoadedRecipe) -> list[Problem]:
    """Cross-tokenizer alignment in a logits recipe whose two models read one tokenizer: the losses then compare
    the vocabularies' shared part at aligned positions only, when without it they compare whole distributions."""
    recipe = loaded.recipe
    if recipe.family != "logits" or recipe.alignment is None:
        return []
    teacher, student = (source.tokenizer or source.model for source in (recipe.teacher, recipe.student))
    if teacher is None or teacher != student:
        return []
    return [
        loaded.problem(
            ("alignment",),
            f"both models read one tokenizer ({student}): alignment is for two, and with it the losses compare only "
            "aligned positions and shared tokens; remove it to compare every position's whole distribution",
        )
    ]


def _without_evaluation(loaded: LoadedRecipe) -> list[Problem]:
    """Evaluation settings written in a recipe that has no eval prompts: nothing evaluates, and no `best` is kept."""
    data = loaded.recipe.data
    if data.eval is not None or data.eval_fraction > 0:
        return []
    inert = {
        "eval_every_steps": "unused: no eval prompts (data.eval, data.eval_fraction), so nothing is evaluated",
        "keep_best": "unused: no eval prompts (data.eval, data.eval_fraction), so no `best` checkpoint is kept",
    }
    written = [name for name in inert if ("output", name) in loaded.tree.positions]
    if not loaded.recipe.output.keep_best and "keep_best" in written:
        written.remove("keep_best")  # `keep_best: false` asks for what happens anyway
    return [loaded.problem(("output", name), inert[name]) for name in written]


def _unused_rate(loaded: LoadedRecipe, index: int, part: str) -> str:
    if part == "bolt_on" and not loaded.recipe.bolt_on.present:  # adding it to trainable would be refused
        return "unused: this recipe has no bolt-on layers; remove this value"
    trains = ", ".join(loaded.recipe.stages[index].trainable)
    return (
        f"unused: this stage trains only {trains} (stages[{index}].trainable), so {part} keeps its weights; add "
        f"{part} to trainable, or remove this value"
    )


def as_warning(problem: Problem) -> str:
    """The way every command says a warning: `warning: file:line:col: field: message`."""
    return f"warning: {problem}"

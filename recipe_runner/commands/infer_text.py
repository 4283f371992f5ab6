"""`recipe infer` for a logits recipe: the distilled student continues each prompt (and the teacher, with
--compare), printed as text."""

from __future__ import annotations

from pathlib import Path

import click

from components.errors import UserFacingError
from schemas import Recipe

# Options of `recipe infer` that only mean something for images.
IMAGE_OPTIONS = ("encoder", "negative_prompt", "steps", "guidance", "width", "height", "out", "seed")


class TextInferenceError(UserFacingError):
    """No export to read, or one of another recipe."""


def _export_dir(recipe: Recipe, checkpoint: str | None) -> Path:
    from components.export.causal_lm import MANIFEST, read_causal_lm_manifest

    directory = Path(checkpoint) if checkpoint else Path(recipe.output.dir) / "export"
    manifest = read_causal_lm_manifest(directory)
    if manifest is None:
        raise TextInferenceError(
            f"no exported causal LM in {directory} (no readable {MANIFEST}): train with `recipe run RECIPE`, or "
            "write one from a checkpoint with `recipe export RECIPE`"
        )
    if manifest.bidirectional:
        raise TextInferenceError(
            f"{directory} holds a bidirectional encoder (recipe {manifest.recipe!r}, trained by denoising), which "
            "continues no text: load it with transformers' AutoModel and padding-only attention masks"
        )
    if checkpoint is None and manifest.recipe != recipe.recipe:
        raise TextInferenceError(
            f"{directory} holds the export of recipe {manifest.recipe!r}, not {recipe.recipe!r} (an inherited "
            "output.dir?): set output.dir for this recipe, or pass --checkpoint DIR to use that export on purpose"
        )
    return directory


def infer_text(recipe: Recipe, prompts: tuple[str, ...], options: dict) -> None:
    """Print, for each prompt, the student's greedy continuation (and the teacher's with --compare)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from components.inference.text_generation import continue_prompts
    from components.models import build_model, freeze, load_tokenizer
    from components.models.loading import quiet_transformers_bars
    from recipe_runner.trainer.logit_parts import teacher_seed

    if getattr(recipe.student, "bidirectional", False):
        raise TextInferenceError(
            f"recipe {recipe.recipe!r} trains a bidirectional encoder, which continues no text: load its export "
            "with transformers' AutoModel and attend both ways (see README, denoising)"
        )
    given = [f"--{name.replace('_', '-')}" for name in IMAGE_OPTIONS if options.get(name) is not None]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} set how images are rendered; recipe {recipe.recipe!r} distils logits, and "
            "`recipe infer` prints the student's continuation of each prompt (--max-new-tokens sets its length)"
        )
    directory = _export_dir(recipe, options["checkpoint"])
    device, length = options["device"], options["max_new_tokens"] or 64
    with quiet_transformers_bars():
        student = AutoModelForCausalLM.from_pretrained(directory, local_files_only=True).to(device)
    outputs = {"student": continue_prompts(student, AutoTokenizer.from_pretrained(directory), list(prompts), length)}
    if options["compare"]:
        del student
        teacher = freeze(build_model(recipe.teacher, "teacher", device=device, seed=teacher_seed(recipe)))
        tokenizer = load_tokenizer(recipe.teacher)
        outputs["teacher"] = continue_prompts(teacher, tokenizer, list(prompts), length)
    for index, prompt in enumerate(prompts):
        click.echo(f"prompt: {prompt}")
        for who, texts in outputs.items():
            click.echo(f"{who}: {texts[index]}")
        if index + 1 < len(prompts):
            click.echo("")

"""`recipe infer` for a logits recipe: the distilled student continues each prompt (and the teacher, with
--compare), printed as text."""

from __future__ import annotations

from pathlib import Path

import click

from components.errors import UserFacingError
from recipe_runner.commands.missing_export import no_export_yet, training_checkpoint
from recipe_runner.next_commands import NextCommands
from schemas import Recipe

# Options of `recipe infer` that only mean something for images.
IMAGE_OPTIONS = ("encoder", "negative_prompt", "steps", "guidance", "width", "height", "out", "seed")


class TextInferenceError(UserFacingError):
    """No export to read, or one of another recipe."""


# How to use what a denoising recipe exports, since `recipe infer` cannot.
READ_AN_ENCODER = (
    "continues no text: load it with transformers' AutoModel and a padding-only 4D attention mask "
    "(create_bidirectional_mask with allow_is_bidirectional_skip=False; see README, denoising)"
)


def _export_dir(recipe: Recipe, checkpoint: str | None, commands: NextCommands) -> Path:
    from components.export.causal_lm import MANIFEST, read_causal_lm_manifest
    from components.export.written_files import CHECKPOINT_MARKER

    directory = Path(checkpoint) if checkpoint else Path(recipe.output.dir) / "export"
    manifest = read_causal_lm_manifest(directory)
    if manifest is None and checkpoint is None and not directory.exists():
        raise TextInferenceError(no_export_yet(Path(recipe.output.dir), commands))
    if manifest is None and (directory / CHECKPOINT_MARKER).is_file():
        raise TextInferenceError(training_checkpoint(directory, commands))
    if manifest is None and (directory / "encoder.json").is_file():
        raise TextInferenceError(
            f"{directory} holds a distilled image encoder (an embedding recipe's export), and this is a logits "
            "recipe: render with it through the embedding recipe that made it, or give this recipe's causal-LM "
            f"export (`{commands.command('export')}` writes it)"
        )
    if manifest is None:
        raise TextInferenceError(
            f"no exported causal LM in {directory} (no readable {MANIFEST}): give the folder that `recipe run` or "
            f"`recipe export` wrote, or write one with `{commands.command('export')}`"
        )
    if manifest.bidirectional:
        raise TextInferenceError(
            f"{directory} holds a bidirectional encoder (recipe {manifest.recipe!r}, trained by denoising), which "
            + READ_AN_ENCODER
        )
    if checkpoint is None and manifest.recipe != recipe.recipe:
        raise TextInferenceError(
            f"{directory} holds the export of recipe {manifest.recipe!r}, not {recipe.recipe!r} (an inherited "
            "output.dir?): set output.dir for this recipe, or pass --checkpoint DIR to use that export on purpose"
        )
    return directory


def _saved_dtype(directory: Path) -> str:
    """The dtype the export was saved in (its config.json says), so it generates as it was written."""
    import json

    try:
        config = json.loads((directory / "config.json").read_text(encoding="utf-8"))
        saved = config.get("dtype") or config.get("torch_dtype")
    except (OSError, ValueError, AttributeError):
        saved = None  # the load names the damaged file
    return saved if saved in ("float32", "bfloat16", "float16") else "float32"


def _load_export(directory: Path, device: str):
    """The exported student and its tokenizer, loaded as training loads a model folder: damaged or hand-edited
    files are one line naming the folder, not a traceback or random weights."""
    from components.export.load_checks import REEXPORT, first_damaged_weights
    from components.models import build_model, load_tokenizer
    from components.models.loading import quiet_transformers_bars
    from schemas.models import CausalLMStudent

    damage = first_damaged_weights(sorted(directory.glob("*.safetensors")))
    if damage is not None:
        raise TextInferenceError(damage)
    source = CausalLMStudent(type="causal_lm", model=str(directory), dtype=_saved_dtype(directory))
    try:
        tokenizer = load_tokenizer(source)
        with quiet_transformers_bars():
            student = build_model(source, "student", device=device)
    except UserFacingError as exc:
        raise TextInferenceError(f"{str(exc).rstrip('.')}; {REEXPORT}") from None
    if len(tokenizer) > student.get_input_embeddings().num_embeddings or not len(tokenizer("a")["input_ids"]):
        raise TextInferenceError(f"{directory}: its tokenizer files do not fit its model (edited?); {REEXPORT}")
    return student, tokenizer


def _prompt_tokens(model, max_length: int, new_tokens: int) -> int:
    """Prompt tokens a model reads before writing `new_tokens` (a longer prompt keeps its start): within the
    recipe's max_length, and within the positions the model has, which --max-new-tokens may not fill."""
    positions = getattr(model.config, "max_position_embeddings", None) or max_length + new_tokens
    if new_tokens >= positions:
        raise click.BadParameter(
            f"{new_tokens}: the model reads at most {positions} positions, prompt included; give fewer",
            param_hint="--max-new-tokens",
        )
    return min(max_length, positions - new_tokens)


def _say_cut_prompts(who: str, tokenizer, prompts: tuple[str, ...], kept: int, max_length: int, new: int) -> None:
    """A prompt cut to fit is continued from its start only: said, with what sets the room, rather than shown
    as the whole prompt's continuation."""
    from components.data.prompt_ids import prompt_ids

    field = f"{who}.max_length"
    why = f"{field} {max_length}" if kept == max_length else f"the model's positions less --max-new-tokens {new}"
    for index, ids in enumerate(prompt_ids(tokenizer, list(prompts))):
        if len(ids) > kept:
            click.echo(
                f"warning: prompt {index + 1} is {len(ids)} tokens; the {who} continues its first {kept} ({why}): "
                f"{'lower --max-new-tokens, or ' if kept < max_length else ''}shorten the prompt",
                err=True,
            )


def infer_text(recipe: Recipe, prompts: tuple[str, ...], options: dict, commands: NextCommands) -> None:
    """Print, for each prompt, the student's greedy continuation (and the teacher's with --compare); `commands`
    are this command's own lines, for the message when there is no export to read."""
    from components.inference.text_generation import continue_prompts
    from components.models import build_model, freeze, load_tokenizer
    from recipe_runner.trainer.logit_parts import teacher_seed

    if getattr(recipe.student, "bidirectional", False):
        raise TextInferenceError(
            f"recipe {recipe.recipe!r} trains a bidirectional encoder, whose export " + READ_AN_ENCODER
        )
    given = [f"--{name.replace('_', '-')}" for name in IMAGE_OPTIONS if options.get(name) is not None]
    if given:
        raise click.UsageError(
            f"{', '.join(given)} set how images are rendered; recipe {recipe.recipe!r} distils logits, and "
            "`recipe infer` prints the student's continuation of each prompt (--max-new-tokens sets its length)"
        )
    directory = _export_dir(recipe, options["checkpoint"], commands)
    device, length = options["device"], options["max_new_tokens"] or 64
    student, student_tokenizer = _load_export(directory, device)
    kept = _prompt_tokens(student, recipe.student.max_length, length)
    _say_cut_prompts("student", student_tokenizer, prompts, kept, recipe.student.max_length, length)
    outputs = {"student": continue_prompts(student, student_tokenizer, list(prompts), length, max_length=kept)}
    if options["compare"]:
        del student
        teacher = freeze(build_model(recipe.teacher, "teacher", device=device, seed=teacher_seed(recipe)))
        tokenizer = load_tokenizer(recipe.teacher)
        kept = _prompt_tokens(teacher, recipe.teacher.max_length, length)
        _say_cut_prompts("teacher", tokenizer, prompts, kept, recipe.teacher.max_length, length)
        outputs["teacher"] = continue_prompts(teacher, tokenizer, list(prompts), length, max_length=kept)
    for index, prompt in enumerate(prompts):
        click.echo(f"prompt: {prompt}")
        for who, texts in outputs.items():
            click.echo(f"{who}: {texts[index]}")
        if index + 1 < len(prompts):
            click.echo("")

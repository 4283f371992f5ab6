"""`recipe infer`: render with Chroma from the distilled encoder (qwen), the teacher (t5), or both side by side."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import click

from recipe_runner.cli_support import (
    NEITHER_DATA_NOR_CACHE,
    overrides_option,
    reports_recipe_errors,
    trust_remote_code_option,
)
from recipe_runner.commands.missing_export import no_export_yet
from recipe_runner.next_commands import NextCommands
from schemas.inference import GUIDANCE_MAX, SIDE_MAX, STEPS_MAX, Inference
from schemas.models import T5EncoderTeacher

if TYPE_CHECKING:
    from components.export import EncoderManifest

LABELS = {"t5": "t5 (teacher)", "qwen": "qwen (distilled)"}
OPTIONS = {  # Inference field -> the option that sets it, for usage errors
    "encoder": "--encoder",
    "steps": "--steps",
    "guidance": "--guidance",
    "size": "--width/--height",
    "negative_prompt": "--negative-prompt",
    "seed": "--seed",
}
SIZE_MULTIPLE = 16  # as schemas.inference.Inference requires of `size`


class ImageSide(click.ParamType):
    """--width/--height: a positive multiple of 16, reported by click as a usage error naming the option."""

    name = "pixels"

    def convert(self, value, param, ctx) -> int:
        number = click.INT.convert(value, param, ctx)
        if number <= 0 or number % SIZE_MULTIPLE or number > SIDE_MAX:
            self.fail(f"{number}: must be a multiple of {SIZE_MULTIPLE} from {SIZE_MULTIPLE} to {SIDE_MAX}", param, ctx)
        return number


class GuidanceScale(click.ParamType):
    """--guidance: the recipe's range for inference.guidance (a NaN fails too), as a usage error naming the option."""

    name = "scale"

    def convert(self, value, param, ctx) -> float:
        number = click.FLOAT.convert(value, param, ctx)
        if not 0 <= number <= GUIDANCE_MAX:
            self.fail(f"{value}: must be from 0 to {GUIDANCE_MAX:g}", param, ctx)
        return number


@dataclass(frozen=True)
class InferJob:
    """Everything `infer` will do, resolved and checked before any model is loaded."""

    spec: Inference  # recipe (or export) defaults with command-line overrides applied
    encoders: tuple[str, ...]
    prompts: tuple[str, ...]
    export_dir: Path | None
    teacher: T5EncoderTeacher | None
    teacher_seed: int  # what an inline-config teacher's random weights are drawn from, as training drew them
    device: str
    out: Path  # numbered per prompt when there are several
    overwrite: bool  # --out was given: the user chose that path; a default path never replaces an earlier image


def _read_prompts(prompts: tuple[str, ...], prompts_file: str | None) -> tuple[str, ...]:
    """--prompt values, then the --prompts file's lines; what is wrong with either is a usage error (exit 2)."""
    collected = list(prompts)
    for index, prompt in enumerate(prompts):
        if not prompt.strip():
            raise click.UsageError(f"--prompt #{index + 1} ({prompt!r}): empty; give it some text")
    if prompts_file is not None:
        try:
            lines = Path(prompts_file).read_text(encoding="utf-8-sig").splitlines()  # as training reads prompts
        except OSError as exc:
            raise click.UsageError(f"--prompts {prompts_file}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            from components.data.prompts import utf8_problem

            raise click.UsageError(f"--prompts {utf8_problem(Path(prompts_file))}") from None
        read = [line.strip() for line in lines if line.strip()]
        if not read:
            raise click.UsageError(f"--prompts {prompts_file}: no prompts in file (one prompt per line)")
        collected += read
    if not collected:
        raise click.UsageError("no prompt: give --prompt TEXT or --prompts FILE (one prompt per line)")
    return tuple(collected)


def _override(spec: Inference, values: dict) -> Inference:
    """Command-line values replace recipe defaults; the result is validated like the recipe was."""
    from pydantic import ValidationError

    updates = {key: value for key, value in values.items() if value is not None}
    try:
        return Inference.model_validate({**spec.model_dump(), **updates})
    except ValidationError as exc:
        named = []
        for error in exc.errors():
            field = ".".join(map(str, error["loc"]))
            named.append(f"{OPTIONS.get(field, f'inference.{field}' if field else 'inference')}: {error['msg']}")
        raise click.UsageError(f"invalid option values: {'; '.join(named)}") from None


def _resolve(recipe_file, overrides, options: dict) -> InferJob:
    """Recipe (or export manifest) defaults + command-line options -> a checked InferJob."""
    if options["compare"] and options["encoder"] is not None:
        raise click.UsageError(
            f"--compare renders both encoders (t5 and qwen), so --encoder cannot be given with it: "
            f"drop --encoder {options['encoder']} or --compare"
        )
    checkpoint = options["checkpoint"]
    manifest = None if checkpoint is None else _given_export(Path(checkpoint), recipe_file is not None)
    if recipe_file is not None:
        from recipe_runner.errors import RecipeError
        from recipe_runner.loader import load_recipe

        allowed = options["allow_remote_code"]
        loaded = load_recipe(recipe_file, overrides, allow_remote_code=allowed, unread=NEITHER_DATA_NOR_CACHE)
        recipe = loaded.recipe
        if recipe.inference is None:
            needed = "`recipe infer` needs this section: pipeline (or pipeline_config), steps, guidance, size"
            raise RecipeError([loaded.problem(("inference",), needed)])
        spec, teacher, teacher_seed = recipe.inference, recipe.teacher, recipe.hardware.seed
        export_dir = Path(checkpoint) if checkpoint else Path(recipe.output.dir) / "export"
        default_dir = Path(recipe.output.dir) / "images"
    else:
        if manifest is None:
            raise click.UsageError("give a RECIPE, or --checkpoint DIR naming an exported encoder")
        if manifest.inference is None:
            raise click.UsageError(
                f"--checkpoint {checkpoint}: the export records no inference settings: give the RECIPE too"
            )
        spec, teacher, export_dir, default_dir = manifest.inference, manifest.teacher, Path(checkpoint), Path(".")
        teacher_seed = manifest.teacher_seed or 0  # older exports: the default seed
    width, height = options["width"], options["height"]
    if width is None and height is None:
        size = None
    else:
        size = (spec.size[0] if width is None else width, spec.size[1] if height is None else height)
    spec = _override(
        spec,
        {
            "encoder": options["encoder"],
            "steps": options["steps"],
            "guidance": options["guidance"],
            "size": size,
            "negative_prompt": options["negative_prompt"],
            "seed": options["seed"],
        },
    )
    if spec.guidance <= 1 and spec.negative_prompt.strip():
        click.echo(
            f"warning: guidance {spec.guidance:g} renders without classifier-free guidance (diffusers applies it "
            "above 1 only), so the negative prompt is not used; raise --guidance (or inference.guidance) above 1 "
            "to use it",
            err=True,
        )
    encoders = ("t5", "qwen") if options["compare"] else (spec.encoder,)
    if "t5" in encoders and teacher is None:
        asked = "--compare" if options["compare"] else "--encoder t5" if options["encoder"] else "inference.encoder t5"
        raise click.UsageError(
            f"{asked} needs the teacher, which the export at {checkpoint} does not record: give the RECIPE too"
        )
    if recipe_file is None and "t5" in encoders:
        _teacher_files_here(teacher, export_dir)
    _check_remote_code(teacher if "t5" in encoders else None, options["allow_remote_code"], export_dir)
    if recipe_file is not None and checkpoint is None and "qwen" in encoders:
        commands = NextCommands.of_this_process(recipe_file, overrides, options["allow_remote_code"])
        _refuse_another_recipes_export(export_dir, recipe.recipe, commands)
    device = _checked_device(options["device"])
    prompts = _read_prompts(options["prompts"], options["prompts_file"])
    name = "compare" if options["compare"] else spec.encoder
    out, overwrite = _image_path(options["out"], default_dir / f"{name}.png", len(prompts))
    return InferJob(spec, encoders, prompts, export_dir, teacher, teacher_seed, device, out, overwrite)


def _teacher_files_here(teacher: T5EncoderTeacher, export_dir: Path) -> None:
    """The teacher an export records is named by the paths of the machine that trained it: an export copied
    elsewhere finds them gone, and only the recipe (read from its own folder) can say where they are now."""
    for field in ("model", "tokenizer"):
        value = getattr(teacher, field)
        if value is not None and Path(value).is_absolute() and not Path(value).exists():
            raise click.UsageError(
                f"the teacher's {field} recorded in {export_dir / 'encoder.json'} is {value}, which is not on this "
                "machine (the export was made elsewhere, or its project moved): give the RECIPE too"
            )


def _refuse_another_recipes_export(export_dir: Path, name: str, commands: NextCommands) -> None:
    """The export at a recipe's output.dir was made by another recipe when this one extends it and inherited its
    output.dir: rendering would show the other recipe's encoder under this one's name. None there yet: the
    command lines that write it."""
    from components.export import ExportError, read_manifest
    from components.inference import InferenceError

    try:
        made_by = read_manifest(export_dir).recipe  # (puts back an export a killed replacement hid)
    except ExportError:
        if not export_dir.exists():
            raise InferenceError(no_export_yet(export_dir.parent, commands)) from None
        return  # damaged: said where the encoder loads
    if made_by != name:
        raise InferenceError(
            f"{export_dir} holds the export of recipe {made_by!r}, not of {name!r} (a recipe that extends another "
            f"inherits its output.dir): give this recipe an output.dir of its own and train it, or render that "
            f"export on purpose with --checkpoint {export_dir}"
        )


def _given_export(directory: Path, with_recipe: bool = False) -> EncoderManifest:
    """An explicit --checkpoint must name an export (a usage error otherwise, exit 2); a damaged or outdated
    export stays a problem with its files (exit 1), as at the default <output.dir>/export."""
    from components.export import ExportError, read_manifest
    from components.export.causal_lm import MANIFEST as CAUSAL_LM_MANIFEST
    from components.export.causal_lm import read_causal_lm_manifest
    from components.export.distilled_encoder import CHECKPOINT_MARKER, MANIFEST
    from recipe_runner.commands.infer_text import READ_AN_ENCODER

    try:
        return read_manifest(directory)
    except ExportError as exc:
        if (directory / MANIFEST).is_file():
            raise
        if (directory / CHECKPOINT_MARKER).is_file():
            raise click.UsageError(f"--checkpoint {exc}") from None  # "DIR is a training checkpoint, ..."
        causal_lm = read_causal_lm_manifest(directory)
        if causal_lm is not None and causal_lm.bidirectional:
            raise click.UsageError(
                f"--checkpoint {directory} holds a bidirectional encoder (recipe {causal_lm.recipe!r}, trained by "
                f"denoising), which {READ_AN_ENCODER}"
            ) from None
        if (directory / CAUSAL_LM_MANIFEST).is_file() and with_recipe:
            raise click.UsageError(
                f"--checkpoint {directory} holds a causal LM distilled by a logits recipe, and this recipe distils "
                "an image encoder: give the logits recipe that made it, and `recipe infer` prints the model's "
                "continuation of each prompt"
            ) from None
        if (directory / CAUSAL_LM_MANIFEST).is_file():
            raise click.UsageError(
                f"--checkpoint {directory} holds a causal LM distilled by a logits recipe: give that RECIPE too, "
                "and `recipe infer` prints the model's continuation of each prompt"
            ) from None
        if not directory.exists():
            raise click.UsageError(
                f"--checkpoint {directory}: does not exist; give the folder an export is in"
            ) from None
        inside = directory / "export"
        if (inside / MANIFEST).is_file() or (inside / CAUSAL_LM_MANIFEST).is_file():  # a run's folder given
            raise click.UsageError(
                f"--checkpoint {directory}: holds a run; its export is {inside}: give that"
            ) from None
        raise click.UsageError(
            f"--checkpoint {directory}: no exported encoder there (no {MANIFEST}); give the directory that "
            "`recipe export` (or `recipe run`) wrote"
        ) from None


def _image_path(given: str | None, default: Path, count: int) -> tuple[Path, bool]:
    """--out or the first free default name, and whether to overwrite; checked before any model loads, so a
    render is never lost for want of a place. Only a file the user named is replaced: --out for one prompt. The
    numbered files of several prompts are names the user never wrote, so they take the first free set, as a
    default path does. A bad --out is a usage error (exit 2); an unusable default place a setup problem (exit 1)."""
    from components.inference import InferenceError, check_image_path, free_name
    from components.inference.image_files import check_replaceable

    if given is not None:
        try:
            check_image_path(Path(given), "--out")
            if count == 1:
                check_replaceable(Path(given), "--out")
        except InferenceError as exc:
            raise click.UsageError(str(exc)) from None
        return (Path(given), True) if count == 1 else (free_name(Path(given), count), False)
    check_image_path(default, "image path (choose one with --out)")
    return free_name(default, count), False


def _check_remote_code(teacher: T5EncoderTeacher | None, allowed: bool, export_dir: Path) -> None:
    """An export's encoder.json may ask for remote code too (a recipe's request is refused by its loader)."""
    from components.inference import InferenceError
    from components.models import remote_code_refusal

    refusal = None if teacher is None or allowed else remote_code_refusal(teacher)
    if refusal is not None:
        raise InferenceError(f"the teacher in {export_dir / 'encoder.json'} {refusal}")


def _checked_device(requested: str | None) -> str:
    """--device as torch reads it, or cuda when one is visible; one this machine cannot use is a usage error."""
    import torch

    if requested is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(requested)
    except RuntimeError:
        raise click.UsageError(f"--device {requested}: not a device name; use cpu, cuda or cuda:N") from None
    if device.type not in ("cpu", "cuda"):  # mps, xpu, meta, ...: the pipelines here run on these two
        raise click.UsageError(f"--device {requested}: `recipe infer` runs on cpu or cuda (cuda:N); use one of them")
    if device.type == "cuda" and (not torch.cuda.is_available() or (device.index or 0) >= torch.cuda.device_count()):
        visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
        raise click.UsageError(f"--device {requested}: this machine has {visible} visible CUDA device(s); use cpu")
    return requested


def _check_widths(job: InferJob) -> None:
    """Fail on a width mismatch before spending time on any encoder."""
    from components.export import read_manifest
    from components.inference import check_width, joint_attention_dim
    from components.models import hidden_width, resolve_config

    expected = joint_attention_dim(job.spec)
    if "qwen" in job.encoders:
        check_width(read_manifest(job.export_dir).output_width, expected, f"distilled encoder at {job.export_dir}")
    if "t5" in job.encoders:
        check_width(hidden_width(resolve_config(job.teacher)), expected, "teacher (t5)")


def _encode(job: InferJob, encoder: str):
    from components.inference import encode_with_export, encode_with_teacher

    if encoder == "qwen":
        return encode_with_export(job.export_dir, list(job.prompts), job.spec.negative_prompt, job.device)
    return encode_with_teacher(job.teacher, list(job.prompts), job.spec.negative_prompt, job.device, job.teacher_seed)


def run_job(job: InferJob) -> list[Path]:
    """Encode with each encoder (freeing it before the next), then load the pipeline and render."""
    from components.inference import build_chroma_pipeline, compare_grid, numbered, render, save_image
    from components.inference.t5_encoding import PromptCut

    _check_widths(job)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PromptCut)
        encoded = {encoder: _encode(job, encoder) for encoder in job.encoders}
    for warning in caught:  # a cut prompt once per encoder, as a line of ours; anything else as Python says it
        if issubclass(warning.category, PromptCut):
            click.echo(f"warning: {warning.message}", err=True)
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    pipeline = build_chroma_pipeline(job.spec, job.device)
    spec, written = job.spec, []
    width, height = spec.size
    for index in range(len(job.prompts)):
        images = {}
        for encoder, (conditionings, negative) in encoded.items():
            cond = conditionings[index]
            images[LABELS[encoder]] = render(
                pipeline, cond.embeds, cond.mask, negative.embeds, negative.mask,
                spec.steps, spec.guidance, width, height, spec.seed,
                label=f"prompt {index + 1} {job.prompts[index]!r} with {LABELS[encoder]}",
            )  # fmt: skip
        image = compare_grid(images) if len(images) > 1 else next(iter(images.values()))
        path = numbered(job.out, index, len(job.prompts))
        path.parent.mkdir(parents=True, exist_ok=True)
        written.append(save_image(image, path, job.overwrite))
    return written


@click.command("infer")
@click.argument("recipe", required=False, type=click.Path(dir_okay=False), metavar="[FILE]")
@click.option("--prompt", "prompts", multiple=True, metavar="TEXT", help="Prompt to render (repeatable).")
@click.option("--prompts", "prompts_file", type=click.Path(dir_okay=False), help="File with one prompt per line.")
@click.option("--encoder", type=click.Choice(["qwen", "t5"]), help="Text encoder (default: recipe inference.encoder).")
@click.option("--negative-prompt", help="Negative prompt (default: recipe inference.negative_prompt).")
@click.option("--seed", type=click.IntRange(min=0, max=2**63 - 1), help="Noise seed (default: inference.seed).")
@click.option("--steps", type=click.IntRange(min=1, max=STEPS_MAX), help="Denoising steps.")
@click.option(
    "--guidance",
    type=GuidanceScale(),
    help=f"Classifier-free guidance scale, 0 to {GUIDANCE_MAX:g} (1 or less: none, and the negative prompt is unused).",
)
@click.option("--width", type=ImageSide(), help="Image width in pixels (multiple of 16).")
@click.option("--height", type=ImageSide(), help="Image height in pixels (multiple of 16).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    help="Image path (.png, .jpg, .jpeg, .webp); an image there is replaced (any other file is refused); several "
    "prompts give numbered files (NAME_01.png, ...; NAME-1_01.png, ... when any is taken, never over an earlier "
    "image). "
    "Default: <output.dir>/images/ENCODER.png, compare.png with --compare (./ENCODER.png with --checkpoint and "
    "no FILE), numbered -1, -2, ... so no earlier image is replaced.",
)
@click.option(
    "--checkpoint", type=click.Path(file_okay=False), help="Exported encoder dir (default: <output.dir>/export)."
)
@click.option(
    "--compare", is_flag=True, help="Render with t5 and qwen, same seed, side by side in one PNG (not with --encoder)."
)
@click.option("--device", help="cpu, cuda, cuda:1, ... (default: cuda when available).")
@click.option(
    "--max-new-tokens",
    type=click.IntRange(min=1),
    help="Logits recipes: tokens the student adds to each prompt (default 64).",
)
@overrides_option
@trust_remote_code_option
@reports_recipe_errors
def infer(recipe: str | None, overrides: tuple[str, ...], **options) -> None:
    """Render PROMPTs with Chroma using the distilled encoder (or the T5 teacher, or both with --compare); for a
    logits recipe, print the distilled student's continuation of each PROMPT (and the teacher's with --compare)."""
    if recipe is not None:
        from recipe_runner.loader import load_recipe

        allowed = options["allow_remote_code"]
        loaded = load_recipe(recipe, overrides, allow_remote_code=allowed, unread=NEITHER_DATA_NOR_CACHE)
        if loaded.recipe.family == "logits":
            from recipe_runner.commands.infer_text import infer_text

            options["device"] = _checked_device(options["device"])
            prompts = _read_prompts(options["prompts"], options["prompts_file"])
            infer_text(loaded.recipe, prompts, options, NextCommands.of_this_process(recipe, overrides, allowed))
            return
    if recipe is None and overrides:  # the export's own settings are read; a --set would go nowhere
        raise click.UsageError(
            "--set changes a recipe, and none is given: the export's settings (encoder.json) are used as they are; "
            "name the recipe before the options (`recipe infer RECIPE --checkpoint DIR --set ...`), or give "
            "--steps, --guidance, --width/--height, --seed"
        )
    with warnings.catch_warnings():
        # Deprecation notices from inside diffusers are not actionable by someone rendering an image.
        warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers")
        job = _resolve(recipe, overrides, options)  # a causal LM's export given alone: asks for its recipe
        if options["max_new_tokens"] is not None:
            raise click.UsageError(
                "--max-new-tokens sets how much text a logits recipe's student writes; this renders an image"
            )
        written = run_job(job)
    for path in written:
        click.echo(str(path))

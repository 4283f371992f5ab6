"""What a run keeps on disk, sized from the model as training builds it, and the check made before step one.

A full disk is otherwise found at the first checkpoint that does not fit, hours into the run: it stops there
and the rest of the night is lost. A checkpoint holds every weight of student and bolt-on (model.safetensors)
and AdamW's two moments of every weight the stage trains, in that weight's dtype (optimizer.safetensors); the
RNG state, JSON files and safetensors headers add well under `_FILE_ALLOWANCE`. LoRA adapters are float32
(peft keeps them so), moments included.
A run holds `output.keep_last` step checkpoints, the `best` one when it evaluates, and one more while a
checkpoint is written (the one it replaces is deleted only once the new one is complete); the export written
at the end holds the weights once more, with the config and tokenizer files (Qwen3's: about 105 bytes per
vocabulary entry, so 128 are allowed).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from components.disk_space import bytes_under, require_free, require_writable, same_disk, size_in_words
from components.models import lora_parameter_count
from schemas import Recipe
from schemas.stages import Stage

_ADAPTER_BYTES = 4  # peft keeps adapter weights in float32 whatever the base weights are
_FILE_ALLOWANCE = 1 << 20  # per checkpoint: headers (~150 bytes a tensor), RNG state, JSON files
_TOKENIZER_BYTES_PER_ENTRY = 128  # the export's tokenizer files, per vocabulary entry
_CONFIG_ALLOWANCE = 64 << 10  # the export's config and manifest JSON


@dataclass(frozen=True)
class DiskNeed:
    """The largest checkpoint of any stage, the settings that say how many can be on disk at once, and the
    export."""

    checkpoint_bytes: int
    keep_last: int
    keeps_best: bool  # keep_best, in a run that evaluates
    export_bytes: int

    @property
    def copies(self) -> int:
        """The kept step checkpoints, `best`, and the one being written."""
        return self.keep_last + int(self.keeps_best) + 1

    @property
    def kept(self) -> str:
        return f"output.keep_last {self.keep_last}{', the best' if self.keeps_best else ''}, one being written"

    def fewer_checkpoints(self) -> str:
        """The settings that keep fewer checkpoints, among those not at their least already."""
        fewer = [
            *(["--set output.keep_last=1"] if self.keep_last > 1 else []),
            *(["--set output.keep_best=false"] if self.keeps_best else []),
        ]
        return f", or keep fewer checkpoints ({', '.join(fewer)})" if fewer else ""

    @property
    def total_bytes(self) -> int:
        """The most on disk at any moment: while a checkpoint is written, or once the export is."""
        at_export = (self.copies - 1) * self.checkpoint_bytes + self.export_bytes
        return max(self.copies * self.checkpoint_bytes, at_export)

    def describe(self) -> str:
        export = f" and an export of {size_in_words(self.export_bytes)}" if self.export_bytes else ""
        # The export is written once the checkpoint being written is done: the two are never on disk together.
        when = " (the export is written once no checkpoint is being written)" if self.export_bytes else ""
        return (
            f"up to {self.copies} checkpoints of {size_in_words(self.checkpoint_bytes)} ({self.kept}){export}: "
            f"{size_in_words(self.total_bytes)} at most at any one time{when}"
        )


def _parameter_bytes(module: nn.Module) -> int:
    return sum(parameter.numel() * parameter.element_size() for parameter in module.parameters())


def stage_checkpoint_bytes(model: nn.Module, stage: Stage) -> int:
    """Weights (with LoRA adapters while a LoRA stage runs) plus two AdamW moments per trained weight.

    `model` is a DistillModel (student and bolt_on) in the dtypes training gives it; meta tensors serve as well."""
    trained = _parameter_bytes(model.bolt_on) if "bolt_on" in stage.trainable else 0
    adapters = 0
    if "student" in stage.trainable:
        if stage.student_lora is not None:
            try:
                adapters = lora_parameter_count(model.student, stage.student_lora) * _ADAPTER_BYTES
            except ValueError:  # a target peft cannot adapt: the plan names it and the run refuses to start
                adapters = 0
            # the adapters stand in for the student's own weights; what trains beside it (projections) is whole
            trained += adapters + sum(_parameter_bytes(m) for m in model.student_side() if m is not model.student)
        else:
            trained += sum(_parameter_bytes(module) for module in model.student_side())
    return _parameter_bytes(model) + adapters + 2 * trained + _FILE_ALLOWANCE


def export_bytes(model: nn.Module) -> int:
    """The export of a DistillModel (or LogitsModel, whose training-only projections stay out): the weights of
    student and bolt-on, config and manifest JSON, and the tokenizer files."""
    vocabulary = model.student.get_input_embeddings().num_embeddings
    weights = _parameter_bytes(model.student) + _parameter_bytes(model.bolt_on)
    return weights + vocabulary * _TOKENIZER_BYTES_PER_ENTRY + _CONFIG_ALLOWANCE


def disk_need(model: nn.Module, recipe: Recipe) -> DiskNeed:
    """What the run keeps at most, from a DistillModel (real or meta) in the dtypes training gives it."""
    output = recipe.output
    evaluates = recipe.data.eval is not None or recipe.data.eval_fraction > 0
    return DiskNeed(
        checkpoint_bytes=max(stage_checkpoint_bytes(model, stage) for stage in recipe.stages),
        keep_last=output.keep_last,
        keeps_best=output.keep_best and evaluates,
        export_bytes=export_bytes(model) if output.export else 0,
    )


def check_disk_space(out_dir: Path, need: DiskNeed) -> None:
    """Refuse to start when the disk cannot hold what the run will keep, or refuses writes; checkpoints already
    there count. `checkpoints/` may be a link to another disk than the export's: each is then sized on its own."""
    checkpoints, export = out_dir / "checkpoints", out_dir / "export"
    elsewhere = "write elsewhere (--set output.dir=...)"
    require_writable(checkpoints, "the run's checkpoints", f"make it writable, or {elsewhere}")
    already = bytes_under(checkpoints)
    remedies = f"free space, or {elsewhere}{need.fewer_checkpoints()}"
    if not need.export_bytes or same_disk(checkpoints, export):
        require_free(checkpoints, need.total_bytes - already, f"this run keeps {need.describe()}", remedies)
        return
    only_checkpoints = DiskNeed(need.checkpoint_bytes, need.keep_last, need.keeps_best, 0)
    require_free(checkpoints, only_checkpoints.total_bytes - already, f"this run keeps {only_checkpoints.describe()}",
                 remedies)  # fmt: skip
    require_free(export, need.export_bytes, f"the export at the end takes {size_in_words(need.export_bytes)}",
                 f"free space, or {elsewhere}")  # fmt: skip

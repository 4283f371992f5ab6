"""What a training step and an evaluation compute, per family: the rest of the loop (stages, checkpoints, stops,
resume) is the same for every family and does not look inside batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import torch
from torch import nn

from components.data.pipeline import DistillBatch
from components.data.texts import TextBatch
from components.losses import DistillLoss
from components.losses.logit_losses import LogitDistillLoss
from components.models import pad_id
from components.teacher_outputs import encode_teacher
from recipe_runner.trainer.evaluation import evaluate
from recipe_runner.trainer.logit_evaluation import TokenRows, evaluate_logits
from recipe_runner.trainer.logit_parts import teacher_logits
from recipe_runner.trainer.on_policy import continue_with_student
from recipe_runner.trainer.parts import RunParts, RunSetupError
from schemas import Recipe
from schemas.stages import Stage

Total = Callable[[torch.Tensor], torch.Tensor]  # adds up a vector of sums over every process


class Objective(Protocol):
    def training_loss(self, model: nn.Module, batch) -> torch.Tensor:
        """The loss of one micro-batch, through `model` (the prepared, possibly compiled, trained model)."""

    def evaluate(self, model: nn.Module, batches: Iterable, total: Total) -> dict[str, float]:
        """Held-out metrics over `batches` ({} when there were none), `eval/loss` among them."""


class HiddenStateObjective:
    """Embedding family: the student + bolt-on's vectors against the teacher's, pair by aligned pair."""

    def __init__(self, recipe: Recipe, parts: RunParts, stage: Stage, compiled: bool) -> None:
        assert recipe.alignment is not None
        self.loss = DistillLoss(stage.losses, recipe.alignment, compiled)
        self.tiers = list(recipe.alignment.tiers)
        self.teacher = parts.teacher

    def _teacher_hidden(self, batch: DistillBatch) -> torch.Tensor:
        if batch.teacher_hidden is not None:
            return batch.teacher_hidden
        if self.teacher is None:
            raise RunSetupError("teacher outputs are neither cached nor computable")
        return encode_teacher(self.teacher, batch.teacher_ids, batch.teacher_mask)

    def training_loss(self, model: nn.Module, batch: DistillBatch) -> torch.Tensor:
        out = model(batch.student_ids, batch.student_mask, batch.student_packing)
        teacher = self._teacher_hidden(batch)
        loss, _ = self.loss.training_loss(out, batch.student_mask, teacher, batch.teacher_mask, batch.alignment)
        return loss

    def evaluate(self, model: nn.Module, batches: Iterable[DistillBatch], total: Total) -> dict[str, float]:
        student = lambda b: model(b.student_ids, b.student_mask, b.student_packing)  # noqa: E731
        return evaluate(student, self._teacher_hidden, batches, self.loss, self.tiers, total=total)


class LogitObjective:
    """Logits family: the student's next-token distributions against the teacher's, token by token."""

    def __init__(self, recipe: Recipe, parts: RunParts, stage: Stage, unwrap: Callable[[nn.Module], nn.Module]) -> None:
        assert parts.teacher is not None
        tokenizer = parts.student_tokenizer
        self.loss = LogitDistillLoss(stage.losses, len(tokenizer))
        self.teacher = parts.teacher
        self.on_policy, self.unwrap = stage.on_policy, unwrap
        self.max_length, self.pad, self.eos = recipe.student.max_length, pad_id(tokenizer), tokenizer.eos_token_id

    def rows(self, model: nn.Module, batch: TextBatch) -> TokenRows:
        """Both models' outputs at the batch's scored tokens: logits, labels, mapped hidden states."""
        pairs = self.loss.pairs
        student = (
            model(batch.student_ids, batch.student_mask, pairs)
            if pairs
            else model(batch.student_ids, batch.student_mask)
        )
        teacher = teacher_logits(self.teacher, batch.student_ids, batch.student_mask, tuple(t for _, t in pairs))
        (s_logits, s_states), (t_logits, t_states) = (student, teacher) if pairs else ((student, ()), (teacher, {}))
        features = {pair: (s_states[i], t_states[pair[1]]) for i, pair in enumerate(pairs)}
        rows = TokenRows(s_logits, t_logits, batch.labels, features)
        return rows if batch.scored is None else rows.select(batch.scored)

    def training_loss(self, model: nn.Module, batch: TextBatch) -> torch.Tensor:
        # Drawn from the global generator, which checkpoints keep: a resumed run draws as the whole run did.
        if self.on_policy is not None and torch.rand(()) < self.on_policy.fraction:
            student = self.unwrap(model).student
            batch = continue_with_student(student, batch, self.on_policy, self.max_length, self.pad, self.eos)
        rows = self.rows(model, batch)
        loss, _ = self.loss(rows.student, rows.teacher, rows.labels, rows.features)
        return loss

    def evaluate(self, model: nn.Module, batches: Iterable[TextBatch], total: Total) -> dict[str, float]:
        return evaluate_logits(lambda batch: self.rows(model, batch), batches, self.loss, total=total)


def objective_for(
    recipe: Recipe, parts: RunParts, stage: Stage, compiled: bool, unwrap: Callable[[nn.Module], nn.Module]
) -> Objective:
    """`unwrap`: the trained model inside its DDP (or other) wrapper, for what runs outside the training forward."""
    if recipe.family == "logits":
        return LogitObjective(recipe, parts, stage, unwrap)
    return HiddenStateObjective(recipe, parts, stage, compiled)

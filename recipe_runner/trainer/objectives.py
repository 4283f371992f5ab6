"""What a training step and an evaluation compute, per family: the rest of the loop (stages, checkpoints, stops,
resume) is the same for every family and does not look inside batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

import torch
from torch import nn

from components.data.pipeline import Collator, DistillBatch, PromptPairs, predicting_matches
from components.data.texts import TextBatch, next_token_labels
from components.losses import DistillLoss
from components.losses.cross_vocab import CrossVocabLoss, row_index
from components.losses.logit_losses import IGNORED, FeatureKey, LogitDistillLoss, term_names
from components.models import pad_id
from components.teacher_outputs import encode_teacher
from recipe_runner.trainer.denoising import corrupt, mask_token_id
from recipe_runner.trainer.evaluation import evaluate
from recipe_runner.trainer.logit_evaluation import TokenRows, evaluate_logits
from recipe_runner.trainer.logit_parts import teacher_logits
from recipe_runner.trainer.on_policy import CrossVocabContinuations, continue_with_student
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
        loss, _ = self.loss.training_loss(out, teacher, batch.alignment)
        return loss

    def evaluate(self, model: nn.Module, batches: Iterable[DistillBatch], total: Total) -> dict[str, float]:
        student = lambda b: model(b.student_ids, b.student_mask, b.student_packing)  # noqa: E731
        return evaluate(student, self._teacher_hidden, batches, self.loss, self.tiers, total=total)


def token_rows(
    model: nn.Module,
    teacher: nn.Module | None,
    batch: TextBatch,
    keys: tuple[FeatureKey, ...],
    enter: Callable[[str], None] = lambda phase: None,
) -> TokenRows:
    """Both models' outputs at the batch's scored tokens: logits, labels, and the features' sides. `enter` hears
    where the student's forward ends and the teacher's begins (the benchmark's phases)."""
    ids, mask, packing = batch.student_ids, batch.student_mask, batch.student_packing
    student = model(ids, mask, keys, packing)
    found = None
    if teacher is not None:
        enter("teacher")
        wanted = tuple(sorted({(kind, layer) for kind, _, layer in keys}))
        read = batch.teacher_ids if batch.teacher_ids is not None else ids
        found = teacher_logits(teacher, read, mask, wanted, packing)
    (s_logits, s_sides), (t_logits, t_sides) = (student, found) if keys else ((student, ()), (found, {}))
    features = {key: (s_sides[i], t_sides[(key[0], key[2])]) for i, key in enumerate(keys)}
    rows = TokenRows(s_logits, t_logits, batch.labels, features)
    return rows if batch.scored is None else rows.select(batch.scored)


class LogitObjective:
    """Logits family: the student's next-token distributions against the teacher's, token by token."""

    def __init__(self, recipe: Recipe, parts: RunParts, stage: Stage, unwrap: Callable[[nn.Module], nn.Module]) -> None:
        tokenizer = parts.student_tokenizer  # the teacher is None when it only wrote the answers trained on
        self.loss = LogitDistillLoss(stage.losses, len(tokenizer))
        self.teacher = parts.teacher
        self.on_policy, self.unwrap = stage.on_policy, unwrap
        self.max_length, self.pad, self.eos = recipe.student.max_length, pad_id(tokenizer), tokenizer.eos_token_id
        self.denoising, self.seed = stage.denoising, recipe.hardware.seed
        self.mask_id = mask_token_id(tokenizer, stage.denoising) if stage.denoising is not None else None

    def rows(self, model: nn.Module, batch: TextBatch) -> TokenRows:
        return token_rows(model, self.teacher, batch, self.loss.features)

    def training_loss(self, model: nn.Module, batch: TextBatch) -> torch.Tensor:
        # Drawn from the global generator, which checkpoints keep: a resumed run draws as the whole run did.
        if self.on_policy is not None and torch.rand(()) < self.on_policy.fraction:
            student = self.unwrap(model).student
            batch = continue_with_student(student, batch, self.on_policy, self.max_length, self.pad, self.eos)
        if self.denoising is not None:  # the spans are drawn from the checkpointed generator too
            batch = corrupt(batch, self.denoising, self.mask_id)
        rows = self.rows(model, batch)
        loss, _ = self.loss(rows.student, rows.teacher, rows.labels, rows.features)
        return loss

    def evaluate(self, model: nn.Module, batches: Iterable[TextBatch], total: Total) -> dict[str, float]:
        if self.denoising is None:
            return evaluate_logits(lambda batch: self.rows(model, batch), batches, self.loss, total=total)
        generator = torch.Generator().manual_seed(self.seed)  # the same spans at every evaluation

        def corrupted_rows(batch: TextBatch) -> TokenRows:
            return self.rows(model, corrupt(batch, self.denoising, self.mask_id, generator))

        return evaluate_logits(corrupted_rows, batches, self.loss, total=total)


class CrossVocabObjective:
    """Logits family across two tokenizers: ULD and the divergences over shared tokens at the positions before
    matched tokens, and the student's cross-entropy on its own tokens of the text."""

    def __init__(
        self,
        loss: CrossVocabLoss,
        teacher: nn.Module,
        on_policy: tuple[CrossVocabContinuations, Callable[[nn.Module], nn.Module]] | None = None,
    ) -> None:
        """`on_policy`: what continues a batch with the student's samples, and how to find the student inside
        the trained model."""
        self.loss = loss
        self.teacher = teacher
        self.on_policy = on_policy

    @classmethod
    def for_stage(
        cls, parts: RunParts, stage: Stage, unwrap: Callable[[nn.Module], nn.Module] = lambda model: model
    ) -> CrossVocabObjective:
        assert parts.teacher is not None
        vocabs = (len(parts.student_tokenizer), len(parts.teacher_tokenizer))
        device = next(parts.teacher.parameters()).device
        vocab_map = parts.vocab_map.to(device) if parts.vocab_map is not None else None
        on_policy = None
        if stage.on_policy is not None:
            assert isinstance(parts.train, PromptPairs) and isinstance(parts.collate, Collator)
            tokenizer = parts.student_tokenizer
            on_policy = (CrossVocabContinuations(parts.train, parts.collate, stage.on_policy, tokenizer), unwrap)
        return cls(CrossVocabLoss(stage.losses, vocabs, vocab_map), parts.teacher, on_policy)

    def terms(
        self, model: Callable, batch: DistillBatch, enter: Callable[[str], None] = lambda phase: None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-loss sums and counts of one batch; `enter` hears where the teacher's forward and the loss begin
        (the benchmark's phases)."""
        student = model(batch.student_ids, batch.student_mask, (), batch.student_packing)
        enter("teacher")
        teacher = teacher_logits(self.teacher, batch.teacher_ids, batch.teacher_mask, (), batch.teacher_packing)
        enter("loss")
        a, both = batch.alignment, predicting_matches(batch)
        labels = next_token_labels(batch.student_ids, batch.student_mask)
        if batch.scored is not None:  # written answers: the student learns to write the answer only
            labels = torch.where(batch.scored, labels, IGNORED)
        sample = a.matched_b[both]
        pairs = (
            row_index(batch.student_mask, sample, a.matched_s[both] - 1),
            row_index(batch.teacher_mask, sample, a.matched_t[both] - 1),
        )
        return self.loss.sums_and_counts(student, teacher, pairs, labels)

    def training_loss(self, model: nn.Module, batch: DistillBatch) -> torch.Tensor:
        if self.on_policy is not None:
            continuations, unwrap = self.on_policy
            if torch.rand(()) < continuations.spec.fraction:  # the checkpointed generator, as on one vocabulary
                batch = continuations(unwrap(model).student, batch)
        sums, counts = self.terms(model, batch)
        return self.loss.total(sums, counts)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batches: Iterable[DistillBatch], total: Total) -> dict[str, float]:
        """Means over every aligned pair and token of all batches (not means of batch means)."""
        k, found = len(self.loss.losses), None
        for batch in batches:
            sums, counts = self.terms(model, batch)
            row = torch.cat([sums, counts]).float()
            found = row if found is None else found + row
        values = total(found if found is not None else torch.zeros(2 * k))
        sums, counts = values[:k], values[k:]
        if not counts.any():
            return {}
        metrics = {"eval/loss": float(self.loss.total(sums, counts))}
        for name, value, count in zip(term_names(self.loss.losses), sums.tolist(), counts.tolist(), strict=True):
            if count:  # a term with no aligned pair in the held-out texts measured nothing: not a perfect 0
                metrics[f"eval/terms/{name}"] = value / count  # as trained, as the other objectives name them
        return metrics


def objective_for(
    recipe: Recipe, parts: RunParts, stage: Stage, compiled: bool, unwrap: Callable[[nn.Module], nn.Module]
) -> Objective:
    """`unwrap`: the trained model inside its DDP (or other) wrapper, for what runs outside the training forward."""
    if recipe.family == "logits":
        if recipe.alignment is not None:
            return CrossVocabObjective.for_stage(parts, stage, unwrap)
        return LogitObjective(recipe, parts, stage, unwrap)
    return HiddenStateObjective(recipe, parts, stage, compiled)

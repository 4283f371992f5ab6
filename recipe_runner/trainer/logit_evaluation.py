"""Held-out metrics of the logits family: the stage loss and each of its terms as trained (`eval/terms/...`),
KL(teacher || student) at temperature 1, the student's cross-entropy on the text, and how often both models rank
the same token first (the last two need a teacher in training: without one, as when it only wrote the answers,
only the loss and cross-entropy are measured)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from components.data.texts import TextBatch
from components.losses.logit_losses import Features, LogitDistillLoss, term_names
from schemas.stages import CrossEntropyLoss, ForwardKLLoss


@dataclass
class TokenRows:
    """Student and teacher outputs at the same tokens, one row each: logits, the text's next tokens, and the
    mapped hidden states of hidden_states losses."""

    student: torch.Tensor
    teacher: torch.Tensor | None  # None: no teacher in training (it wrote the answers; cross-entropy only)
    labels: torch.Tensor
    features: Features

    def select(self, rows: torch.Tensor) -> TokenRows:
        features = {pair: (s[rows], t[rows]) for pair, (s, t) in self.features.items()}
        teacher = self.teacher[rows] if self.teacher is not None else None
        return TokenRows(self.student[rows], teacher, self.labels[rows], features)


@torch.no_grad()
def evaluate_logits(
    rows_of: Callable[[TextBatch], TokenRows],
    batches: Iterable[TextBatch],
    loss: LogitDistillLoss,
    total: Callable[[torch.Tensor], torch.Tensor] = lambda sums: sums,
) -> dict[str, float]:
    """Every term is a mean over all tokens of all batches, not a mean of batch means. Sums stay on the device
    until the end; `total` adds up those of every process (each evaluates its share of the batches)."""
    measure = LogitDistillLoss([ForwardKLLoss(type="forward_kl"), CrossEntropyLoss(type="cross_entropy")], loss.vocab)
    k = len(loss.losses)
    sums: torch.Tensor | None = None
    with_teacher = True
    for batch in batches:
        rows = rows_of(batch)
        student, teacher, labels, vocab = rows.student, rows.teacher, rows.labels, loss.vocab
        with_teacher = teacher is not None
        if teacher is None:
            ce = LogitDistillLoss([CrossEntropyLoss(type="cross_entropy")], vocab).sums(student, None, labels)
            measured, agree = torch.cat([torch.zeros_like(ce), ce]), torch.zeros((), device=student.device)
        else:
            measured = measure.sums(student, teacher, labels)
            agree = (student[:, :vocab].argmax(-1) == teacher[:, :vocab].argmax(-1)).sum()
        row = torch.cat(
            [
                loss.sums(student, teacher, labels, rows.features),  # k stage-term sums
                loss.counts(labels),  # k counts they are averaged over
                measured,  # KL sum, cross-entropy sum
                measure.counts(labels),  # tokens, tokens with a next token
                agree.float()[None],
            ]
        ).float()
        sums = row if sums is None else sums + row
    # The same vector in every process, whatever its batches held (or none at all).
    values = total(sums if sums is not None else torch.zeros(2 * k + 5)).tolist()
    stage_sums, stage_counts = values[:k], values[k : 2 * k]
    kl, ce, tokens, with_next, agreements = values[2 * k :]
    if not tokens:
        return {}
    weighted = sum(
        spec.weight * value / max(count, 1.0)
        for spec, value, count in zip(loss.losses, stage_sums, stage_counts, strict=True)
    )
    metrics = {"eval/loss": weighted, "eval/cross_entropy": ce / max(with_next, 1.0)}
    for name, value, count in zip(term_names(loss.losses), stage_sums, stage_counts, strict=True):
        metrics[f"eval/terms/{name}"] = value / max(count, 1.0)  # each stage term as trained (temperature...)
    if with_teacher:
        metrics.update({"eval/forward_kl": kl / tokens, "eval/top1_agreement": agreements / tokens})
    return metrics

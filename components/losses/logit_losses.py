"""The logits family's stage loss: divergences between next-token distributions of teacher and student, the
student's cross-entropy on the text, and distances between mapped hidden states, averaged over real tokens.

Logits are [tokens, vocabulary]: for a 150k vocabulary one float32 copy of 8k tokens is 5 GiB. The terms are
therefore computed over row chunks whose float32 softmaxes are recomputed in the backward pass rather than kept
(activation checkpointing per chunk): what stays is the logits in the model's dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from components.registry import installed
from schemas.stages import (
    FEATURE_LOSSES,
    AttentionLoss,
    CrossEntropyLoss,
    DivergenceLoss,
    ForwardKLLoss,
    HiddenStatesLoss,
    JSDLoss,
    LogitLoss,
    ReverseKLLoss,
)

CHUNK_ELEMENTS = 1 << 25  # float32 elements of one chunk's logits (128 MiB); a chunk's softmaxes are a few of them
MAX_STRETCH = 100.0  # dynamic temperature: the most a student row's logits are scaled up to the teacher's spread
IGNORED = -100  # label of a position with no next token in the text (the last one, and padding)

# ("hidden" or "attention", student layer, teacher layer): one compared pair of a hidden_states or attention loss.
FeatureKey = tuple[str, int, int]
# Per key: the student's rows (hidden states projected to the teacher's width, or head-averaged attention
# distributions over the keys) and the teacher's, one row per real token.
Features = dict[FeatureKey, tuple[torch.Tensor, torch.Tensor]]
_KIND = {HiddenStatesLoss: "hidden", AttentionLoss: "attention"}


def loss_keys(loss: HiddenStatesLoss | AttentionLoss) -> list[FeatureKey]:
    return [(_KIND[type(loss)], s, t) for s, t in loss.layers.items()]


def feature_keys(losses: list[LogitLoss] | tuple[LogitLoss, ...]) -> tuple[FeatureKey, ...]:
    """Every pair the stage's hidden_states and attention losses compare, in a fixed order."""
    return tuple(sorted({key for loss in losses if isinstance(loss, FEATURE_LOSSES) for key in loss_keys(loss)}))


def _feature_sum(loss: HiddenStatesLoss | AttentionLoss, features: Features) -> torch.Tensor:
    """Sum over rows of the distance, averaged over the loss's layer pairs."""
    total = None
    for key in loss_keys(loss):
        student, teacher = (value.float() for value in features[key])
        if isinstance(loss, AttentionLoss):  # rows are distributions over the keys; padded keys hold 0
            distance = (teacher * (teacher.clamp(min=1e-12).log() - student.clamp(min=1e-12).log())).sum(-1)
        elif loss.distance == "mse":
            distance = (student - teacher).pow(2).mean(-1)
        else:
            distance = 1 - F.cosine_similarity(student, teacher, dim=-1, eps=1e-6)
        total = distance.sum() if total is None else total + distance.sum()
    assert total is not None
    return total / len(loss.layers)


def softened(loss: LogitLoss, student: torch.Tensor, teacher: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Both sides' log-distributions at the loss's temperature. student, teacher: float32 logits.

    With `dynamic_temperature` each row's student temperature makes the spread of its logits the teacher's at
    the loss's temperature: the teacher's softened distribution stays the target, and the student is compared
    by the shape of its logits, not their scale. Its spread stays in the graph so that the term is blind to
    that scale: as a constant of the step, each step shrank the scale a little (a tiny student collapsed
    towards uniform outputs)."""
    t = loss.temperature
    if not loss.dynamic_temperature:
        return F.log_softmax(student / t, dim=-1), F.log_softmax(teacher / t, dim=-1)
    spread = teacher.std(-1, keepdim=True)
    # A row flatter than 1/100 of the teacher's spread (a student's constant row) is stretched 100 times, not
    # more: the gradient scales with the stretch, and an unbounded one would dominate the step.
    ratio = spread / torch.maximum(student.std(-1, keepdim=True), spread / MAX_STRETCH).clamp(min=1e-12)
    return F.log_softmax(student * ratio / t, dim=-1), F.log_softmax(teacher / t, dim=-1)


def _divergence(loss: LogitLoss, student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Per-row divergence at the loss's temperature, times its square. student, teacher: float32 logits."""
    return divergence_of(loss, *softened(loss, student, teacher))


def forward_kl(loss: ForwardKLLoss, s_log: torch.Tensor, t_log: torch.Tensor) -> torch.Tensor:
    return (t_log.exp() * (t_log - s_log)).sum(-1)


def reverse_kl(loss: ReverseKLLoss, s_log: torch.Tensor, t_log: torch.Tensor) -> torch.Tensor:
    return (s_log.exp() * (s_log - t_log)).sum(-1)


def jsd(loss: JSDLoss, s_log: torch.Tensor, t_log: torch.Tensor) -> torch.Tensor:
    mixture = torch.logsumexp(torch.stack([t_log + math.log(loss.beta), s_log + math.log(1 - loss.beta)]), 0)
    teacher_side = (t_log.exp() * (t_log - mixture)).sum(-1)
    student_side = (s_log.exp() * (s_log - mixture)).sum(-1)
    return loss.beta * teacher_side + (1 - loss.beta) * student_side


DIVERGENCES: dict[type, Callable[..., torch.Tensor]] = {
    ForwardKLLoss: forward_kl,
    ReverseKLLoss: reverse_kl,
    JSDLoss: jsd,
}


def divergence_of(loss: DivergenceLoss, s_log: torch.Tensor, t_log: torch.Tensor) -> torch.Tensor:
    """Per-row divergence of two log-distributions already softened by the loss's temperature, times its
    square (so that gradients keep their scale); a type from a package brings its own (`components.registry`)."""
    built_in = DIVERGENCES.get(type(loss))
    divergence = built_in if built_in is not None else installed(loss).divergence  # type: ignore[union-attr]
    return divergence(loss, s_log, t_log) * (loss.temperature * loss.temperature)


def _chunk_sums(
    losses: tuple[LogitLoss, ...], vocab: int, student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """Sum over the chunk's rows of each loss term (one entry per loss)."""
    s = student[:, :vocab].float()
    t = teacher[:, :vocab].float() if any(not isinstance(loss, CrossEntropyLoss) for loss in losses) else None
    sums = []
    for loss in losses:
        if isinstance(loss, CrossEntropyLoss):
            sums.append(F.cross_entropy(s, labels, ignore_index=IGNORED, reduction="sum"))
        else:
            sums.append(_divergence(loss, s, t).sum())
    return torch.stack(sums)


def numbered(names: list[str]) -> list[str]:
    """Each name, numbered where it repeats (`huber_0`, `huber_1`), so that no term's log overwrites another's."""
    return [f"{name}_{names[:i].count(name)}" if names.count(name) > 1 else name for i, name in enumerate(names)]


def term_names(losses: list[LogitLoss] | tuple[LogitLoss, ...]) -> list[str]:
    """A name per loss for logs: its type, numbered where a stage has several of one type."""
    return numbered([loss.type for loss in losses])


def chunked_sums(function, rows: int, *tensors: torch.Tensor) -> torch.Tensor:
    """`function`'s sums over row chunks of `tensors` (each row-aligned), added up; a chunk's float32 work is
    recomputed in the backward pass rather than kept, when gradients flow."""
    grad = any(tensor.requires_grad for tensor in tensors)
    if tensors[0].shape[0] == 0:  # nothing scored (a denoised batch of one-token texts): zero sums, still a graph
        return function(*tensors)
    total = None
    for start in range(0, tensors[0].shape[0], rows):
        part = [tensor[start : start + rows] for tensor in tensors]
        chunk = checkpoint(function, *part, use_reentrant=False) if grad else function(*part)
        total = chunk if total is None else total + chunk
    return total


class LogitDistillLoss:
    """Sum of `weight * mean per-token term` over the stage's losses.

    `vocab`: the tokenizer's size. Models often pad their embedding past it (Qwen2.5-7B has 152064 rows, 1.5B
    151936, for 151665 tokens); rows past it are no token, and both sides are compared on the tokenizer's ids."""

    def __init__(self, losses: list[LogitLoss], vocab: int) -> None:
        self.losses = tuple(losses)
        self.vocab = vocab
        self.on_logits = tuple(loss for loss in self.losses if not isinstance(loss, FEATURE_LOSSES))
        self.features = feature_keys(self.losses)

    def _logit_sums(self, student: torch.Tensor, teacher: torch.Tensor | None, labels: torch.Tensor) -> torch.Tensor:
        """Sums of the terms on logits, chunk by chunk; the float32 work of a chunk is recomputed in backward.
        `teacher` None: no teacher logits (cross-entropy alone reads none)."""
        if teacher is None:
            assert all(isinstance(loss, CrossEntropyLoss) for loss in self.on_logits), "divergences need a teacher"
            teacher = student  # a placeholder the chunks never read
        rows = max(1, CHUNK_ELEMENTS // self.vocab)
        return chunked_sums(partial(_chunk_sums, self.on_logits, self.vocab), rows, student, teacher, labels)

    def sums(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor | None,
        labels: torch.Tensor,
        features: Features | None = None,
    ) -> torch.Tensor:
        """Per-loss sums over every row (one entry per loss, in the stage's order)."""
        on_logits = iter(self._logit_sums(student, teacher, labels) if self.on_logits else [])
        sums = []
        for loss in self.losses:
            if isinstance(loss, FEATURE_LOSSES):
                assert features is not None, "hidden_states and attention losses need the mapped layers' outputs"
                sums.append(_feature_sum(loss, features))
            else:
                sums.append(next(on_logits))
        return torch.stack(sums)

    def counts(self, labels: torch.Tensor) -> torch.Tensor:
        """What each loss's sum is averaged over: every real token, or for cross-entropy those with a next token."""
        rows = torch.tensor(float(labels.shape[0]), device=labels.device)
        with_next = (labels != IGNORED).sum().float()
        return torch.stack([with_next if isinstance(loss, CrossEntropyLoss) else rows for loss in self.losses])

    def __call__(
        self,
        student: torch.Tensor,
        teacher: torch.Tensor | None,
        labels: torch.Tensor,
        features: Features | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss and each term (detached). student, teacher: [tokens, vocabulary] logits; labels: [tokens];
        features: the mapped layers' states, when the stage has hidden_states losses."""
        means = self.sums(student, teacher, labels, features) / self.counts(labels).clamp(min=1.0)
        weights = torch.tensor([loss.weight for loss in self.losses], device=means.device)
        terms = {f"logits/{name}": means[i].detach() for i, name in enumerate(term_names(self.losses))}
        return (means * weights).sum(), terms

"""Span corruption of text batches for `denoising` stages, as T5 and UL2 draw it: `density` of each text's tokens
masked, in spans whose lengths average `span`, laid out at random without touching (or the end of the text masked,
the S-denoiser), each text drawing its denoiser from the mixture. The student reads the masked tokens written over
with the mask token, and each position whose next token was masked is scored with that token as its label (masked
next-token prediction). The teacher reads the clean text.

Drawn per text on the CPU, from the generator a checkpoint keeps: a per-token coin (spans starting where it falls)
would overlap them, mask fewer tokens than `density` and none at all in a fifth of short texts."""

from __future__ import annotations

import math

import torch

from components.data.texts import TextBatch
from components.losses.logit_losses import IGNORED
from schemas.stages import Denoising, SpanDenoiser, SuffixDenoiser


def _composition(total: int, parts: int, generator: torch.Generator | None) -> list[int]:
    """`total` split into `parts` lengths of at least one, every such split as likely."""
    cuts = sorted((torch.randperm(total - 1, generator=generator)[: parts - 1] + 1).tolist())
    bounds = [0, *cuts, total]
    return [after - before for before, after in zip(bounds, bounds[1:], strict=False)]


def span_positions(length: int, spec: SpanDenoiser, generator: torch.Generator | None = None) -> list[int]:
    """The masked positions of one text of `length` real tokens: round(density x maskable) of them (at least
    one), in round(masked / span) spans with a kept token between any two; never position 0, which no position
    predicts."""
    maskable = length - 1
    if maskable < 1:
        return []
    masked = min(max(int(maskable * spec.density + 0.5), 1), maskable)
    spans = min(max(int(masked / spec.span + 0.5), 1), masked, maskable - masked + 1)
    lengths = _composition(masked, spans, generator)
    # spans + 1 gaps: the inner ones of at least one kept token, the first and last possibly empty
    gaps = _composition(maskable - masked + 2, spans + 1, generator)
    gaps[0], gaps[-1] = gaps[0] - 1, gaps[-1] - 1
    positions, at = [], 1
    for gap, span in zip(gaps[:-1], lengths, strict=True):
        at += gap
        positions.extend(range(at, at + span))
        at += span
    return positions


def suffix_positions(length: int, spec: SuffixDenoiser) -> list[int]:
    """The last `fraction` of the text's real tokens (at least one, never the first token)."""
    kept = max(length - math.ceil(length * spec.fraction), 1)
    return list(range(kept, length))


def denoising_mask(
    mask: torch.Tensor,
    spec: Denoising,
    generator: torch.Generator | None = None,
    lengths: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """The masked tokens of a right-padded [B, L] batch: each text corrupted by one of the spec's denoisers, drawn
    by their shares (every draw from `generator`, a CPU one; None: the global one). `lengths`: each row's real
    tokens as the collator counted them on the host; read from `mask` otherwise, which on a GPU waits for it.
    The mask is drawn on the host and copied from pinned memory, so a GPU step is queued without waiting."""
    denoisers = spec.denoisers
    total = sum(d.share for d in denoisers)  # normalised in float64: shares like 1e-50 would be 0 in float32
    shares = torch.tensor([d.share / total for d in denoisers], dtype=torch.float)
    lengths = lengths if lengths is not None else tuple(mask.sum(1).tolist())
    chosen = torch.multinomial(shares, len(lengths), replacement=True, generator=generator).tolist()
    masked = torch.zeros(mask.shape, dtype=torch.bool)
    for row, (length, which) in enumerate(zip(lengths, chosen, strict=True)):
        denoiser = denoisers[which]
        if isinstance(denoiser, SpanDenoiser):
            positions = span_positions(length, denoiser, generator)
        else:
            positions = suffix_positions(length, denoiser)
        masked[row, positions] = True
    # From pageable memory a copy to the GPU waits for the work queued before it; from pinned memory it does not.
    return (masked.pin_memory() if mask.device.type == "cuda" else masked).to(mask.device, non_blocking=True)


def corrupt(batch: TextBatch, spec: Denoising, mask_id: int, generator: torch.Generator | None = None) -> TextBatch:
    """The batch as a denoising step reads it: corrupted ids for the student, the clean ones for the teacher,
    labels and scores at the positions just before masked tokens."""
    ids, mask = batch.student_ids, batch.student_mask
    masked = denoising_mask(mask, spec, generator, batch.student_lengths)
    predicts = torch.zeros_like(masked)
    predicts[:, :-1] = masked[:, 1:]  # position i predicts token i + 1
    following = torch.full_like(ids, IGNORED)
    following[:, :-1] = ids[:, 1:]
    labels = torch.where(predicts, following, IGNORED)[mask]
    return TextBatch(
        indices=batch.indices,
        student_ids=ids.masked_fill(masked, mask_id),
        student_mask=mask,
        student_packing=batch.student_packing,
        labels=labels,
        student_tokens=batch.student_tokens,
        scored=predicts[mask],
        teacher_ids=ids,
        student_lengths=batch.student_lengths,
    )


def mask_token_id(tokenizer, spec: Denoising) -> int:
    """The id written over masked spans; ValueError (with what to write instead) when `mask_token` is not one
    token of the tokenizer."""
    if spec.mask_token is None:
        if tokenizer.mask_token_id is not None:
            return tokenizer.mask_token_id
        if tokenizer.pad_token_id is not None:
            return tokenizer.pad_token_id
        raise ValueError("the student's tokenizer has neither a mask nor a pad token: set denoising.mask_token")
    ids = tokenizer(spec.mask_token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(
            f"mask_token {spec.mask_token!r} is {len(ids)} tokens of the student's tokenizer, not one: choose a "
            "single token (e.g. one of its special tokens)"
        )
    return ids[0]

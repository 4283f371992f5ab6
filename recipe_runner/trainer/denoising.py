"""Span corruption of text batches for `denoising` stages, on the device with no per-text Python: spans of
`span` tokens start at random real positions (about `density` of the tokens end up masked), or a text's end is
masked (UL2's S-denoiser), each text drawing its denoiser from the mixture; the student reads the masked tokens
written over with the mask token, and each position whose next token was masked is scored with that token
as its label (masked next-token prediction). The teacher reads the clean text."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from components.data.texts import TextBatch
from components.losses.logit_losses import IGNORED
from schemas.stages import Denoising, SpanDenoiser, SuffixDenoiser


def span_mask(mask: torch.Tensor, spec: SpanDenoiser, generator: torch.Generator | None = None) -> torch.Tensor:
    """Which real tokens of a right-padded [B, L] batch are masked: every token of a span that starts at a
    random real position; the first token of each text is never masked (no position predicts it)."""
    starts = torch.rand(mask.shape, generator=generator, device=mask.device) < spec.density / spec.span
    begun = starts.long().cumsum(1)  # spans begun so far; a token is covered by one begun in the last `span`
    covered = begun - F.pad(begun, (spec.span, 0))[:, : mask.shape[1]] > 0
    masked = covered & mask
    masked[:, 0] = False
    return masked


def suffix_mask(mask: torch.Tensor, spec: SuffixDenoiser) -> torch.Tensor:
    """The last `fraction` of each text's real tokens (at least one, never the first token)."""
    lengths = mask.sum(1, keepdim=True)
    kept = (lengths - (lengths * spec.fraction).ceil().long()).clamp(min=1)
    positions = torch.arange(mask.shape[1], device=mask.device)[None]
    return (positions >= kept) & mask


def denoising_mask(mask: torch.Tensor, spec: Denoising, generator: torch.Generator | None = None) -> torch.Tensor:
    """The masked tokens of a batch: each text corrupted by one of the spec's denoisers, drawn by their shares
    (all draws from `generator`, on the device)."""
    denoisers = spec.denoisers
    if len(denoisers) == 1 and isinstance(denoisers[0], SpanDenoiser):
        return span_mask(mask, denoisers[0], generator)
    total = sum(d.share for d in denoisers)  # normalised in float64: shares like 1e-50 would be 0 in float32
    shares = torch.tensor([d.share / total for d in denoisers], dtype=torch.float, device=mask.device)
    chosen = torch.multinomial(shares, mask.shape[0], replacement=True, generator=generator)
    each = torch.stack(
        [span_mask(mask, d, generator) if isinstance(d, SpanDenoiser) else suffix_mask(mask, d) for d in denoisers]
    )
    return each[chosen, torch.arange(mask.shape[0], device=mask.device)]


def corrupt(batch: TextBatch, spec: Denoising, mask_id: int, generator: torch.Generator | None = None) -> TextBatch:
    """The batch as a denoising step reads it: corrupted ids for the student, the clean ones for the teacher,
    labels and scores at the positions just before masked tokens."""
    ids, mask = batch.student_ids, batch.student_mask
    masked = denoising_mask(mask, spec, generator)
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

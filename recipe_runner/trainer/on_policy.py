"""On-policy batches (GKD): the student continues each text of a batch with its own samples, and only the
positions that predict a sampled token are scored. Everything here is batched tensor work: no per-text Python."""

from __future__ import annotations

import torch
from torch import nn

from components.data.texts import TextBatch
from components.losses.logit_losses import IGNORED
from components.packed_sequences import PackedSequences
from schemas.stages import OnPolicy


def _left_aligned(ids: torch.Tensor, lengths: torch.Tensor, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded rows cut to `lengths`, moved to the right edge: generation appends after the last column."""
    width = int(lengths.max())
    columns = torch.arange(width, device=ids.device)[None]
    source = columns - (width - lengths)[:, None]
    real = source >= 0
    return torch.where(real, ids.gather(1, source.clamp(min=0)), pad), real


def _sampled_lengths(new: torch.Tensor, eos: int | None) -> torch.Tensor:
    """Tokens of each row's sample up to and including its first end-of-text (the rest is generate's padding)."""
    if eos is None:
        return torch.full((new.shape[0],), new.shape[1], device=new.device)
    is_eos = new == eos
    after_first = (is_eos.long().cumsum(1) - is_eos.long()) > 0
    return (~after_first).sum(1)


@torch.no_grad()
def continue_with_student(
    student: nn.Module, batch: TextBatch, spec: OnPolicy, max_length: int, pad: int, eos: int | None
) -> TextBatch:
    """`batch`'s texts (each cut to leave room for the sample within `max_length`) followed by the student's
    sampled continuation, right-padded again; `scored` marks the real tokens whose next token was sampled. A text
    made of a prompt and the teacher's answer is continued from its prompt: the student answers instead."""
    ids = batch.student_ids
    given = batch.prompt_lengths if batch.prompt_lengths is not None else batch.student_mask.sum(1)
    prompt = given.clamp(max=max_length - spec.max_new_tokens)
    left, real = _left_aligned(ids, prompt, pad)
    was_training = student.training
    student.eval()  # no dropout while sampling; gradient checkpointing is for training mode only
    try:
        out = student.generate(
            input_ids=left,
            attention_mask=real.long(),
            do_sample=True,
            temperature=spec.temperature,
            top_k=0,
            top_p=1.0,
            max_new_tokens=spec.max_new_tokens,
            pad_token_id=pad,
            eos_token_id=eos,
            use_cache=True,
        )
    finally:
        student.train(was_training)
    new = out[:, left.shape[1] :]
    total = prompt + _sampled_lengths(new, eos)
    columns = torch.arange(int(total.max()), device=ids.device)[None]
    from_text = ids.gather(1, columns.clamp(max=ids.shape[1] - 1).expand(ids.shape[0], -1))
    from_sample = new.gather(1, (columns - prompt[:, None]).clamp(min=0, max=new.shape[1] - 1))
    mask = columns < total[:, None]
    sequence = torch.where(columns < prompt[:, None], from_text, from_sample).masked_fill(~mask, pad)
    scored = (columns >= prompt[:, None] - 1) & (columns <= total[:, None] - 2)
    tokens = int(mask.sum())
    return TextBatch(
        indices=batch.indices,
        student_ids=sequence,
        student_mask=mask,
        student_packing=PackedSequences.from_mask(mask),
        labels=torch.full((tokens,), IGNORED, device=ids.device),
        student_tokens=tokens,
        scored=scored[mask],
    )

"""On-policy batches (GKD): the student continues each text of a batch with its own samples, and only the
positions that predict a sampled token are scored. On one vocabulary everything here is batched tensor work, with
no per-text Python; across two, the samples are read again as text (see CrossVocabContinuations)."""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from components.data.pipeline import Collator, DistillBatch, PromptPairs, pad_rows
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


class SamplingDiverged(RuntimeError):
    """The student's next-token probabilities hold NaN or inf: its weights diverged in an earlier step."""


def _generate_or_stop(student: nn.Module, **settings) -> torch.Tensor:
    """torch.multinomial's refusal of a NaN probability, said as what it means for the run."""
    try:
        return student.generate(**settings)
    except RuntimeError as exc:
        if "probability tensor contains" in str(exc):
            raise SamplingDiverged(str(exc)) from None
        raise


@torch.no_grad()
def sampled_tokens(
    student: nn.Module, ids: torch.Tensor, prompt: torch.Tensor, spec: OnPolicy, pad: int, eos: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The student's sample after the first `prompt[row]` tokens of each right-padded row of `ids`, and how many
    of its tokens are real (up to and including its first end-of-text)."""
    left, real = _left_aligned(ids, prompt, pad)
    was_training = student.training
    student.eval()  # no dropout while sampling; gradient checkpointing is for training mode only
    try:
        out = _generate_or_stop(
            student,
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
    return new, _sampled_lengths(new, eos)


def continue_with_student(
    student: nn.Module, batch: TextBatch, spec: OnPolicy, max_length: int, pad: int, eos: int | None
) -> TextBatch:
    """`batch`'s texts (each cut to leave room for the sample within `max_length`) followed by the student's
    sampled continuation, right-padded again; `scored` marks the real tokens whose next token was sampled. A text
    made of a prompt and the teacher's answer is continued from its prompt: the student answers instead."""
    ids = batch.student_ids
    given = batch.prompt_lengths
    if given is None:  # a whole text: continued itself, not after the end-of-text a tokenizer may have appended
        given = batch.student_mask.sum(1)
        if eos is not None:
            ends = ids.gather(1, (given - 1).clamp(min=0)[:, None]).squeeze(1).eq(eos) & (given > 1)
            given = given - ends.long()
    prompt = given.clamp(max=max_length - spec.max_new_tokens)
    new, sampled = sampled_tokens(student, ids, prompt, spec, pad, eos)
    total = prompt + sampled
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


class CrossVocabContinuations:
    """On-policy batches across two tokenizers. The models share characters, not ids, so the student's sample
    becomes text: both read prompt + decoded sample through their own tokenizers (the student's tokens of it are
    those its tokenizer writes for that text, nearly always the sampled ones), and the aligner pairs them as it
    pairs the teacher's written answers. Decoding, tokenizing and aligning are per-text host work, beside a
    generation that costs far more."""

    def __init__(self, pairs: PromptPairs, collate: Collator, spec: OnPolicy, tokenizer) -> None:
        self.pairs, self.collate, self.spec, self.tokenizer = pairs, collate, spec, tokenizer
        self.pad, self.eos = collate.student_pad_id, tokenizer.eos_token_id

    def _sample_text(self, prompt: list[int], sample: list[int]) -> tuple[str, bool]:
        """The text a sample adds to its prompt, and whether exactly: decoded after the prompt, it keeps the space
        a word-starting token carries (which a tokenizer drops from the start of a text) and lacks it when the
        sample goes on with the prompt's last word or with punctuation."""
        before = self.tokenizer.decode(prompt, skip_special_tokens=True)
        whole = self.tokenizer.decode(prompt + sample, skip_special_tokens=True)
        if whole.startswith(before):
            return whole[len(before) :], True
        return self.tokenizer.decode(sample, skip_special_tokens=True), False  # a character split at the seam

    def __call__(self, student: nn.Module, batch: DistillBatch) -> DistillBatch:
        """`batch`'s prompts, each followed by the student's sample; only the aligned positions that predict a
        sampled token are compared, and there is no cross-entropy on the student's own output."""
        device = batch.student_ids.device
        indices = batch.indices.tolist()
        prompts = [self.pairs.prompt_ids(index, self.spec.max_new_tokens) for index in indices]
        ids, mask = pad_rows(prompts, max(map(len, prompts)), self.pad)
        new, lengths = sampled_tokens(student, ids.to(device), mask.sum(1).to(device), self.spec, self.pad, self.eos)
        rows = [tokens[:length] for tokens, length in zip(new.tolist(), lengths.tolist(), strict=True)]
        items = []
        for index, prompt, row in zip(indices, prompts, rows, strict=True):
            text, exact = self._sample_text(prompt, row)
            ended = bool(row) and row[-1] == self.eos
            items.append(self.pairs.answered(index, text, ended, spaced=not exact))
        continued = self.collate(items).to(device)
        assert continued.scored is not None
        return replace(continued, scored=torch.zeros_like(continued.scored))

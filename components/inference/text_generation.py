"""Continuations of prompts by a causal LM, in batches: what `recipe infer` shows for the logits family, and the
teacher's answers of sequence-level distillation."""

from __future__ import annotations

import torch
from torch import nn

from components.data.prompt_ids import prompt_ids


def _left_padded(
    tokenizer, prompts: list[str], pad: int, max_length: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows aligned on their last token, so that generation appends after the last column of every row; each
    prompt cut at `max_length` tokens when given, and continued itself (not after an end-of-text)."""
    rows = prompt_ids(tokenizer, prompts, max_length)
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, width - len(row) :] = torch.as_tensor(row, dtype=torch.long)
        mask[index, width - len(row) :] = 1
    return ids, mask


@torch.no_grad()
def continue_prompts(
    model: nn.Module,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int,
    temperature: float = 0.0,
    batch_size: int = 8,
    seed: int = 0,
    max_length: int | None = None,
) -> list[str]:
    """Each prompt's continuation (the new text only): greedy at temperature 0, so that two runs and two models
    compare fairly; sampled otherwise, seeded per batch so that a batch answers the same when written again.
    `max_length`: prompt tokens kept (the model's max_length)."""
    device = next(model.parameters()).device
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id or 0
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0} if temperature > 0 else {"do_sample": False}
    texts = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = _left_padded(tokenizer, prompts[start : start + batch_size], pad, max_length)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed + start)
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                max_new_tokens=max_new_tokens,
                pad_token_id=pad,
                **sampling,
            )
        texts += tokenizer.batch_decode(out[:, ids.shape[1] :], skip_special_tokens=True)
    return texts

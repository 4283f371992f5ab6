"""Greedy continuations of prompts by a causal LM: what `recipe infer` shows for the logits family."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def continue_prompts(model: nn.Module, tokenizer, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Each prompt's continuation (the new text only), greedy so that two runs and two models compare fairly."""
    device = next(model.parameters()).device
    model.eval()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    texts = []
    for prompt in prompts:
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"].to(device)
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=pad,
        )
        texts.append(tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True))
    return texts

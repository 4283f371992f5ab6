"""The reference path: T5 encoder embeddings with Chroma's mask (real tokens plus exactly one padding token).

Matches `ChromaPipeline._get_t5_prompt_embeds` (diffusers 0.42.1): the encoder runs with the tokenizer mask,
then the mask handed to the transformer is `arange(L) <= n_real`, i.e. the first padding token stays visible.
Unlike diffusers we keep that mask boolean: the transformer multiplies the mask into a [B,1,L,L] matrix
and a float one reaches attention as an additive bias (+0 / +1), leaving padding unmasked.
Padding to the longest prompt + 1 instead of 512 gives the same visible embeddings (padding is masked in T5).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from components.attention_backends import shape_stable_attention
from components.data.prompts import check_prompts as check_text
from components.inference.chroma import Conditioning, InferenceError, release_memory, split
from schemas.models import T5EncoderTeacher


def chroma_mask(lengths: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Boolean [B, seq_len]: the first `length` tokens plus one padding token (when there is room) are True."""
    positions = torch.arange(seq_len, device=lengths.device).unsqueeze(0)
    return positions <= lengths.unsqueeze(1)


def check_prompts(prompts: list[str], *, allow_empty: bool = False) -> None:
    """Prompt checks raising InferenceError, which the CLI reports without a traceback."""
    check_text(prompts, allow_empty=allow_empty, error=InferenceError)


class PromptCut(UserWarning):
    """A prompt longer than an encoder reads, which it reads the start of: `recipe infer` says each once."""


def warn_cut(tokenizer, prompts: list[str], max_length: int, what: str, field: str) -> list[int]:
    """Each prompt's token count; a PromptCut naming those over `max_length` (`what`: "prompt" or "negative
    prompt"; `field`: the setting that sets the length)."""
    lengths = [len(ids) for ids in tokenizer(prompts, verbose=False)["input_ids"]]
    long = [(i, n) for i, n in enumerate(lengths, 1) if n > max_length]
    if long:
        named = (f"{what} {i}" if len(prompts) > 1 else f"the {what}" for i, _ in long[:5])
        shown = ", ".join(f"{name} ({n} tokens)" for name, (_, n) in zip(named, long, strict=False))
        more = f" and {len(long) - 5} more" if len(long) > 5 else ""
        warnings.warn(f"{shown}{more}: only the first {max_length} tokens are read ({field})", PromptCut, stacklevel=3)
    return lengths


@torch.inference_mode()
@shape_stable_attention()
def encode_t5(
    teacher: nn.Module,
    tokenizer,
    prompts: list[str],
    max_length: int,
    *,
    allow_empty: bool = False,
    what: str = "prompt",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings [B, L, D] (float32) and the Chroma mask [B, L] (bool), L = min(longest + 1, max_length)."""
    check_prompts(prompts, allow_empty=allow_empty)
    device = next(teacher.parameters()).device
    lengths = warn_cut(tokenizer, prompts, max_length, what, "the T5 teacher's teacher.max_length")
    seq_len = min(max(lengths) + 1, max_length)
    batch = tokenizer(prompts, padding="max_length", max_length=seq_len, truncation=True, return_tensors="pt").to(
        device
    )
    token_mask = batch["attention_mask"]
    embeds = teacher(input_ids=batch["input_ids"], attention_mask=token_mask)[0]
    return embeds.float(), chroma_mask(token_mask.sum(dim=1), seq_len)


def encode_with_teacher(
    source: T5EncoderTeacher, prompts: list[str], negative_prompt: str, device: str | torch.device, seed: int = 0
) -> tuple[list[Conditioning], Conditioning]:
    """Build the teacher (an inline config's random weights from `seed`, as training drew them), encode prompts
    and the negative prompt, and free the teacher before rendering."""
    from components.models.loading import build_model, freeze, quiet_transformers_bars
    from components.models.tokenizer import load_tokenizer

    check_prompts(prompts)
    tokenizer = load_tokenizer(source)
    with quiet_transformers_bars():  # the same quiet load as the distilled encoder's
        teacher = freeze(build_model(source, "teacher", device=device, seed=seed))
    try:
        embeds, mask = encode_t5(teacher, tokenizer, prompts, source.max_length)
        negative = encode_t5(
            teacher, tokenizer, [negative_prompt], source.max_length, allow_empty=True, what="negative prompt"
        )
    finally:
        del teacher
        release_memory(device)
    return split(embeds, mask), split(*negative)[0]

"""Teacher forward pass shared by online training and the cache writer."""

from __future__ import annotations

import torch

from components.attention_backends import shape_stable_attention


@torch.no_grad()
@shape_stable_attention()
def encode_teacher(model: torch.nn.Module, input_ids: torch.Tensor, real_mask: torch.Tensor) -> torch.Tensor:
    """Last hidden state of the frozen teacher with padding hidden from attention.

    Chroma encodes with the tokenizer mask too; the one padding position it keeps visible is only
    unmasked later, in the image transformer, so its hidden state is computed the same way here.
    """
    return model(input_ids=input_ids, attention_mask=real_mask.long()).last_hidden_state

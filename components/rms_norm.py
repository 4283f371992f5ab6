"""RMSNorm through torch's fused kernel, shared by the bolt-on norm and the swapped transformers norms."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def rms_norm(hidden: Tensor, weight: Tensor, eps: float, dtype: torch.dtype) -> Tensor:
    """weight * hidden / rms(hidden), computed and returned in `dtype`, whatever autocast would have chosen."""
    hidden, weight = hidden.to(dtype), weight.to(dtype)
    if torch.is_autocast_enabled(hidden.device.type):
        with torch.autocast(hidden.device.type, enabled=False):
            return F.rms_norm(hidden, weight.shape, weight, eps)
    return F.rms_norm(hidden, weight.shape, weight, eps)

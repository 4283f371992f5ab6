"""One-kernel versions of transformers' eager elementwise blocks: the same functions with fewer launches.

On an H100 a training step of the 28-layer student was launch-bound (the GPU busy for about 90 of 390 ms), so
every kernel a layer no longer launches is host time saved. transformers writes RMSNorm as a cast, a square, a
mean, an add, an rsqrt and two multiplies (each a launch, and more in backward, and again when a checkpointed
layer is recomputed); `torch.nn.functional.rms_norm` is one fused CUDA kernel each way (`aten::_fused_rms_norm`).
T5 v1.1's `gelu_new` is about eight elementwise kernels; `gelu(approximate="tanh")` is one.

Only classes whose forward is known to be plain RMSNorm are swapped (Gemma's `1 + weight` norm is not), and the
swap keeps the `weight` parameter object, so state dicts, checkpoints and `save_pretrained` are unchanged.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from transformers.activations import GELUTanh, NewGELUActivation

from components.rms_norm import rms_norm

# transformers RMSNorm classes computing weight * (x / rms(x)) with float32 statistics, checked against
# F.rms_norm by the tests. T5 returns the weight's dtype when the weight is half precision, float32 otherwise;
# the others return the promotion of weight and input dtypes.
_RMS_NORM_CLASSES = {
    "Qwen3RMSNorm": "promote",
    "Qwen2RMSNorm": "promote",
    "LlamaRMSNorm": "promote",
    "T5LayerNorm": "half_weight",
}
_HALF = (torch.float16, torch.bfloat16)


class FusedRMSNorm(nn.Module):
    """Stands in for a transformers RMSNorm, sharing its weight; `dtype_rule` reproduces its output dtype."""

    def __init__(self, weight: nn.Parameter, eps: float, dtype_rule: str) -> None:
        super().__init__()
        self.weight = weight
        self.variance_epsilon = eps
        self.dtype_rule = dtype_rule

    def forward(self, hidden: Tensor) -> Tensor:
        if self.dtype_rule == "half_weight":
            dtype = (
                self.weight.dtype if self.weight.dtype in _HALF else torch.promote_types(hidden.dtype, torch.float32)
            )
        else:
            dtype = torch.promote_types(hidden.dtype, self.weight.dtype)
        return rms_norm(hidden, self.weight, self.variance_epsilon, dtype)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}, dtype_rule={self.dtype_rule}"


def _replacement(child: nn.Module, norms: bool) -> nn.Module | None:
    if type(child) is NewGELUActivation:
        return GELUTanh()
    rule = _RMS_NORM_CLASSES.get(type(child).__name__)
    if norms and rule is not None and type(child).__module__.startswith("transformers.models."):
        return FusedRMSNorm(child.weight, child.variance_epsilon, rule)
    return None


def use_fused_kernels(model: nn.Module, norms: bool = True) -> nn.Module:
    """Swap, in place, every known eager tanh-GELU of `model` and (with `norms`) RMSNorm for its one-kernel
    equivalent. Pass norms=False for a model that runs on a CPU: torch has no fused RMSNorm kernel there, and
    its decomposition is slower and keeps more for backward than transformers' own code."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            replacement = _replacement(child, norms)
            if replacement is not None:
                setattr(parent, name, replacement)
    return model

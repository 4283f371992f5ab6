"""Model FLOPs of a training step and the peak FLOP/s they are divided by (MFU).

Counted on real (non-padding) tokens, so compute spent on padding lowers MFU instead of inflating it, and
without the forward recomputed by gradient checkpointing (MFU, not hardware FLOPs utilisation).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import StrictModel

FLOP_FORMULA = (
    "per sample of n real tokens and per model part: k * (2 * N_dense * n + 4 * L * A * n^2), "
    "k = 3 for trained parts (forward + backward: 6N per token, PaLM's 12*L*A*n attention term), "
    "k = 2 for frozen parts that gradients pass through (LoRA base), k = 1 for frozen forward-only parts "
    "(a frozen student before a trained bolt-on, an uncached teacher); N_dense = parameters minus embedding "
    "tables (an LM head that shares the token embedding's weights is counted: it multiplies activations), "
    "L = attention layers, A = heads x head_dim (a bolt-on transformer: its width); causal masks are "
    "not discounted; gradient-checkpoint recompute is not counted"
)

# Dense bf16/fp16 tensor-core peaks by device-name fragment, most specific first (vendor datasheets).
_PEAK_HALF: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),
    ("H200", 989e12),
    ("A100", 312e12),
)

Role = Literal["trained", "frozen_backprop", "frozen_forward"]
_MULTIPLIER: dict[str, int] = {"trained": 3, "frozen_backprop": 2, "frozen_forward": 1}


class FlopPart(StrictModel):
    """One model part as the FLOP count sees it."""

    name: str = Field(description="student, bolt_on or teacher.")
    role: Role = Field(description="How the step runs it.")
    dense_params: int = Field(ge=0, description="Parameters that multiply activations (embeddings excluded).")
    attention: int = Field(
        default=0, ge=0, description="L * A: sum over layers with sequence-long attention of heads x head_dim."
    )


def part_flops(part: FlopPart, lengths: list[int]) -> float:
    """FLOPs of one part over samples of the given real lengths."""
    tokens = sum(lengths)
    squares = sum(n * n for n in lengths)
    forward = 2 * part.dense_params * tokens + 4 * part.attention * squares
    return float(_MULTIPLIER[part.role] * forward)


def step_flops(parts: list[FlopPart], lengths: list[int]) -> float:
    return sum(part_flops(part, lengths) for part in parts)


def peak_flops(device_name: str, precision: str, override_tflops: float | None) -> tuple[float | None, str]:
    """Peak FLOP/s and where it came from; None when unknown (CPU, fp32, an unlisted GPU)."""
    if override_tflops is not None:
        return override_tflops * 1e12, f"--peak-tflops {override_tflops:g}"
    if precision == "fp32":
        return None, "no peak for fp32 (TF32 depends on torch settings); pass --peak-tflops"
    for fragment, peak in _PEAK_HALF:
        if fragment.lower() in device_name.lower():
            return peak, f"{fragment} dense {precision} datasheet peak {peak / 1e12:g} TFLOP/s"
    return None, f"no peak FLOP/s known for {device_name!r}; pass --peak-tflops to get MFU"

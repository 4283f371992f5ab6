"""Rendering images with the distilled encoder."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from schemas.base import HubOrPath, StrictModel


class Inference(StrictModel):
    """Defaults for `recipe infer`; every value can be overridden on the command line."""

    pipeline: HubOrPath | None = Field(
        default=None, description="Chroma pipeline hub id (e.g. lodestones/Chroma1-HD) or local directory."
    )
    pipeline_config: dict[str, Any] | None = Field(
        default=None,
        description="Inline tiny pipeline: `transformer` and `vae` config mappings with random weights (tests, demo).",
    )
    encoder: Literal["qwen", "t5"] = Field(default="qwen", description="Text encoder used by default.")
    steps: int = Field(default=30, gt=0, description="Denoising steps.")
    guidance: float = Field(default=4.0, ge=0, description="Classifier-free guidance scale.")
    size: tuple[int, int] = Field(default=(1024, 1024), description="Image width and height in pixels.")
    negative_prompt: str = Field(default="", description="Negative prompt.")
    seed: int = Field(default=0, ge=0, lt=2**63, description="Noise seed (torch takes up to 2**63 - 1).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(default="bfloat16", description="Pipeline dtype.")
    cpu_offload: bool = Field(default=False, description="Offload pipeline modules to the CPU between uses.")

    @model_validator(mode="after")
    def _one_source(self) -> Inference:
        if (self.pipeline is None) == (self.pipeline_config is None):
            raise ValueError("give exactly one of `pipeline` and `pipeline_config`")
        if any(side <= 0 or side % 16 for side in self.size):
            raise ValueError(f"size {list(self.size)}: width and height must be positive multiples of 16")
        return self

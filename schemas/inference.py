"""Rendering images with the distilled encoder."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, ValidatorFunctionWrapHandler, field_validator, model_validator

from schemas.base import FreeMapping, HubOrPath, StrictModel

# Scales in use sit near 4; past ~30 an image only burns out, and a scale like 1e30 overflows into NaN pixels.
# `recipe infer --guidance` takes the same range.
GUIDANCE_MAX = 30.0
# Chroma renders up to 2048 pixels a side; 4096 leaves room and stops a typo (100000) before it asks for terabytes.
SIDE_MAX = 4096
STEPS_MAX = 1000  # 30 is usual; a typo's 10**20 steps would only fail deep inside the scheduler


class Inference(StrictModel):
    """Defaults for `recipe infer`; every value can be overridden on the command line."""

    pipeline: HubOrPath | None = Field(
        default=None, description="Chroma pipeline hub id (e.g. lodestones/Chroma1-HD) or local directory."
    )
    pipeline_config: FreeMapping | None = Field(
        default=None,
        description="Inline tiny pipeline: `transformer` and `vae` config mappings with random weights (tests, demo).",
    )
    encoder: Literal["qwen", "t5"] = Field(default="qwen", description="Text encoder used by default.")
    steps: int = Field(default=30, gt=0, le=STEPS_MAX, description=f"Denoising steps, at most {STEPS_MAX}.")
    guidance: float = Field(
        default=4.0,
        ge=0,
        le=GUIDANCE_MAX,
        description=f"Classifier-free guidance scale, 0 to {GUIDANCE_MAX:g}; at 1 or less none is applied (every "
        "such value renders alike) and the negative prompt is unused.",
    )
    size: tuple[int, int] = Field(
        default=(1024, 1024), description=f"Image width and height in pixels, multiples of 16 up to {SIDE_MAX}."
    )
    negative_prompt: str = Field(
        default="", description="Negative prompt (used where guidance is above 1: classifier-free guidance)."
    )
    seed: int = Field(default=0, ge=0, lt=2**63, description="Noise seed (torch takes up to 2**63 - 1).")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(default="bfloat16", description="Pipeline dtype.")
    cpu_offload: bool = Field(default=False, description="Offload pipeline modules to the CPU between uses.")

    @field_validator("guidance", mode="wrap")
    @classmethod
    def _guidance_in_range(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> float:
        """Name the whole range, not only the bound that was crossed."""
        try:
            return handler(value)
        except ValidationError as exc:
            if {e["type"] for e in exc.errors()} <= {"greater_than_equal", "less_than_equal"}:
                raise ValueError(f"must be from 0 to {GUIDANCE_MAX:g}, got {value!r}") from None
            raise

    @model_validator(mode="after")
    def _one_source(self) -> Inference:
        if (self.pipeline is None) == (self.pipeline_config is None):
            raise ValueError("give exactly one of `pipeline` and `pipeline_config`")
        return self

    @field_validator("size")
    @classmethod
    def _multiples_of_16(cls, size: tuple[int, int]) -> tuple[int, int]:
        """The VAE downsamples 8x and the transformer packs 2x2 latent patches: each side must divide by 16."""
        if any(side <= 0 or side % 16 or side > SIDE_MAX for side in size):
            raise ValueError(f"{list(size)}: width and height must be multiples of 16 from 16 to {SIDE_MAX}")
        return size

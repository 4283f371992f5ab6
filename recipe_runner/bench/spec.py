"""What a benchmark run measures and how long: one typed object from the CLI to every section."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import StrictModel

Section = Literal["training", "teacher", "aligner", "loader", "inference"]
SECTIONS: tuple[Section, ...] = ("training", "teacher", "aligner", "loader", "inference")


class BenchSpec(StrictModel):
    """Sizes and step counts; `small` shrinks the models and counts so the bench runs on a CPU in seconds."""

    small: bool = Field(default=False, description="Shrunk architectures and short runs (not the real sizes).")
    full_depth: bool = Field(
        default=False,
        description="With small: keep every layer (widths still shrunk), so that the number of kernels a step launches "
        "and the graphs compile builds are those of the real model.",
    )
    steps: int | None = Field(default=None, gt=0, description="Timed training steps (default 20, small 4).")
    peak_tflops: float | None = Field(default=None, gt=0, description="Peak TFLOP/s for MFU on unlisted devices.")
    profile: str | None = Field(
        default=None, description="Write a torch.profiler table of the timed training steps to this file."
    )
    only: list[Section] = Field(default_factory=lambda: list(SECTIONS), min_length=1, description="Sections to run.")

    @property
    def timed_steps(self) -> int:
        return self.steps or (4 if self.small else 20)

    @property
    def warmup_steps(self) -> int:
        return 2 if self.small else 5

    @property
    def teacher_prompts(self) -> int:
        """Prompts encoded into a throwaway cache (the full shipped distribution unless small)."""
        return 192 if self.small else 2000

    @property
    def aligner_prompts(self) -> int:
        return 300 if self.small else 2000

    @property
    def loader_prompts(self) -> int:
        """Prompts of the loader's epoch (and of its throwaway cache: about 0.8 MB each at T5-XXL's width)."""
        return 256 if self.small else 3000

    @property
    def loader_batches(self) -> int:
        """At least this many batches are loaded (epochs over the prompts end to end); the first is not timed."""
        return 16 if self.small else 48

    @property
    def inference_prompts(self) -> int:
        """Single-prompt encodes timed per path; the latency is their median."""
        return 12 if self.small else 50

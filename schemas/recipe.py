"""The whole recipe: one typed object handed from the loader to the compiler and trainer."""

from __future__ import annotations

from pydantic import Field

from schemas.alignment import Alignment
from schemas.base import StrictModel
from schemas.bolt_on import BoltOn
from schemas.data import Data
from schemas.hardware import Hardware
from schemas.inference import Inference
from schemas.models import Student, Teacher
from schemas.output import Output
from schemas.stages import Stage


class Recipe(StrictModel):
    """A distillation job: teacher, student, bolt-on, alignment, data, stages, hardware, output, inference."""

    recipe: str = Field(min_length=1, description="Name of the recipe.")
    description: str = Field(default="", description="Free text for people reading the recipe.")
    teacher: Teacher = Field(description="The model distilled from.")
    student: Student = Field(description="The model distilled into.")
    bolt_on: BoltOn = Field(default_factory=BoltOn, description="Layers from student width to teacher width.")
    alignment: Alignment = Field(description="How student tokens are paired with teacher tokens.")
    data: Data = Field(description="Training and evaluation prompts.")
    stages: list[Stage] = Field(min_length=1, description="Training stages, run in order.")
    hardware: Hardware = Field(default_factory=Hardware, description="Precision, batch shape and backend.")
    output: Output = Field(description="Run directory and cadence.")
    inference: Inference | None = Field(default=None, description="Image rendering defaults for `recipe infer`.")

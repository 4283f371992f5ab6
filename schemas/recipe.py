"""The whole recipe: one typed object handed from the loader to the compiler and trainer."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.alignment import Alignment
from schemas.base import StrictModel
from schemas.bolt_on import BoltOn
from schemas.data import Data
from schemas.hardware import Hardware
from schemas.inference import Inference
from schemas.models import Student, T5EncoderTeacher, Teacher, TeacherCache
from schemas.output import Output
from schemas.stages import Stage

Family = Literal["embedding", "logits"]


class Recipe(StrictModel):
    """A distillation job: teacher, student, bolt-on, alignment, data, stages, hardware, output, inference."""

    recipe: str = Field(min_length=1, description="Name of the recipe.")
    description: str = Field(default="", description="Free text for people reading the recipe.")
    teacher: Teacher = Field(description="The model distilled from.")
    student: Student = Field(description="The model distilled into.")
    bolt_on: BoltOn = Field(default_factory=BoltOn, description="Layers from student width to teacher width.")
    alignment: Alignment | None = Field(
        default=None,
        description="How student tokens are paired with teacher tokens: the embedding family needs it; the logits "
        "family only for a teacher with another tokenizer (with one tokenizer both sides read the same ids).",
    )
    data: Data = Field(description="Training and evaluation prompts.")
    stages: list[Stage] = Field(min_length=1, description="Training stages, run in order.")
    hardware: Hardware = Field(default_factory=Hardware, description="Precision, batch shape and backend.")
    output: Output = Field(description="Run directory and cadence.")
    inference: Inference | None = Field(default=None, description="Image rendering defaults for `recipe infer`.")

    @property
    def family(self) -> Family:
        """What is distilled, decided by the teacher's type: hidden states of a T5 encoder, or next-token logits."""
        return "embedding" if isinstance(self.teacher, T5EncoderTeacher) else "logits"

    @property
    def teacher_cache(self) -> TeacherCache | None:
        """The teacher's output cache; only an embedding teacher has one (a logits teacher runs online)."""
        return self.teacher.cache if isinstance(self.teacher, T5EncoderTeacher) else None

    @property
    def trains_student_weights(self) -> bool:
        """Whether a stage updates the student's own weights, rather than only LoRA adapters over them."""
        return any("student" in stage.trainable and stage.student_lora is None for stage in self.stages)

"""Teacher and student: where the weights, architecture and tokenizer come from."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from schemas.base import FreeMapping, HubOrPath, LocalPath, StrictModel

DType = Literal["float32", "bfloat16", "float16"]


class TeacherCache(StrictModel):
    """Teacher outputs encoded once and reused by every epoch and every rerun."""

    dir: LocalPath = Field(description="Directory of the sharded safetensors cache, relative to the recipe file.")
    shard_size: int = Field(default=1024, gt=0, description="Prompts per shard file.")
    dtype: DType = Field(default="bfloat16", description="Storage dtype of cached hidden states.")
    batch_tokens: int = Field(
        default=16384,
        gt=0,
        description="Padded tokens per teacher forward while writing (prompts sorted by length, so padding "
        "stays small); larger fills a big GPU better, smaller fits a small one.",
    )
    require: bool = Field(
        default=False,
        description="Fail instead of running the teacher online when the cache is missing or incomplete.",
    )


class ModelSource(StrictModel):
    """Weights come from a hub id, a local directory, or an inline architecture config (random weights)."""

    model: HubOrPath | None = Field(
        default=None, description="Hub id (e.g. google/t5-v1_1-xxl) or local directory saved with save_pretrained."
    )
    config: FreeMapping | None = Field(
        default=None,
        description="Inline transformers config (must contain model_type); the model gets random weights. "
        "Used by tests and CPU demos instead of `model`.",
    )
    tokenizer: HubOrPath | None = Field(
        default=None,
        description="Tokenizer hub id, directory, or tokenizer.json file; defaults to `model`.",
    )
    revision: str | None = Field(default=None, description="Hub revision (branch, tag or commit) to pin.")
    dtype: DType = Field(default="bfloat16", description="Dtype the weights are loaded in.")
    max_length: int = Field(default=512, gt=0, description="Tokens kept per prompt; longer prompts are truncated.")
    trust_remote_code: bool = Field(
        default=False,
        description="The model needs Python code shipped with its repository; that code runs only when the command "
        "is also given --trust-remote-code (a shared recipe cannot allow it by itself).",
    )

    @model_validator(mode="after")
    def _one_source(self) -> ModelSource:
        if self.model is None and self.config is None:
            raise ValueError("give either `model` (hub id or path) or an inline `config`")
        if self.model is not None and self.config is not None:
            raise ValueError("give only one of `model` and `config` (set `model: null` to replace an inherited one)")
        if self.config is not None and not isinstance(self.config.get("model_type"), str):
            raise ValueError("inline `config` needs a `model_type` string, e.g. model_type: t5")
        if self.config is not None and self.tokenizer is None:
            raise ValueError("an inline `config` has no tokenizer of its own: set `tokenizer`")
        return self


class T5EncoderTeacher(ModelSource):
    """Encoder half of a T5 model; its last hidden state (after the final norm) is the target."""

    type: Literal["t5_encoder"] = Field(description="Teacher kind.")
    cache: TeacherCache | None = Field(default=None, description="Cache teacher outputs on disk.")
    chroma_mask: bool = Field(
        default=True,
        description="Keep real tokens plus exactly one padding token visible, as Chroma conditions on.",
    )


class HiddenStatesStudent(ModelSource):
    """Any transformers encoder or decoder whose last hidden state is distilled."""

    type: Literal["hidden_states"] = Field(description="Student kind.")
    layer: int = Field(default=-1, description="Hidden-state index used as output; -1 is the last layer.")


class CausalLMTeacher(ModelSource):
    """A causal language model whose next-token distributions are the target (logits family); it runs online,
    on the very token ids the student reads, so both must share one tokenizer."""

    type: Literal["causal_lm"] = Field(description="Teacher kind.")


class CausalLMStudent(ModelSource):
    """A causal language model trained towards the teacher's next-token distributions (logits family)."""

    type: Literal["causal_lm"] = Field(description="Student kind.")


Teacher = Annotated[Union[T5EncoderTeacher, CausalLMTeacher], Field(discriminator="type")]
Student = Annotated[Union[HiddenStatesStudent, CausalLMStudent], Field(discriminator="type")]

"""Teacher and student: where the weights, architecture and tokenizer come from."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from schemas.base import MAX_COUNT, MAX_TOKENS, FreeMapping, HubOrPath, LocalPath, StrictModel

DType = Literal["float32", "bfloat16", "float16"]


class TeacherCache(StrictModel):
    """Teacher outputs encoded once and reused by every epoch and every rerun."""

    dir: LocalPath = Field(description="Directory of the sharded safetensors cache, relative to the recipe file.")
    shard_size: int = Field(default=1024, gt=0, description="Prompts per shard file.")
    dtype: DType = Field(default="bfloat16", description="Storage dtype of cached hidden states.")
    batch_tokens: int = Field(
        default=16384,
        gt=0,
        le=MAX_TOKENS,
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
    max_length: int = Field(
        default=512, gt=0, le=MAX_TOKENS, description="Tokens kept per prompt; longer prompts are truncated."
    )
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


class TeacherAnswers(StrictModel):
    """Sequence-level distillation (Kim and Rush, 2016): the teacher answers every prompt once, before training,
    and the student learns from prompt + answer, its losses scored on the answer's tokens only."""

    dir: LocalPath = Field(description="Directory of the answers (one .jsonl per split), relative to the recipe file.")
    max_new_tokens: int = Field(default=256, gt=0, description="Longest answer, in the teacher's tokens.")
    temperature: float = Field(
        default=0.0, ge=0, description="0 answers greedily; above, answers are sampled at this temperature (seeded)."
    )
    batch_size: int = Field(default=16, gt=0, le=MAX_COUNT, description="Prompts the teacher answers at once.")


class CausalLMTeacher(ModelSource):
    """A causal language model whose next-token distributions are the target (logits family). It runs online, on
    the token ids the student reads (one tokenizer), or on its own with `alignment`; with `answers` it first writes
    the texts the student learns from."""

    type: Literal["causal_lm"] = Field(description="Teacher kind.")
    answers: TeacherAnswers | None = Field(
        default=None,
        description="Train on the teacher's answers to the prompts (sequence-level distillation); with only "
        "cross_entropy losses the teacher is not loaded during training, and its tokenizer may differ.",
    )


class CausalLMStudent(ModelSource):
    """A causal language model trained towards the teacher's next-token distributions (logits family)."""

    type: Literal["causal_lm"] = Field(description="Student kind.")
    bidirectional: bool = Field(
        default=False,
        description="The student attends to the whole text, before and after each token (an encoder made from a "
        "causal LM); it then trains in `denoising` stages only, where what it predicts is hidden from it.",
    )


Teacher = Annotated[Union[T5EncoderTeacher, CausalLMTeacher], Field(discriminator="type")]
Student = Annotated[Union[HiddenStatesStudent, CausalLMStudent], Field(discriminator="type")]

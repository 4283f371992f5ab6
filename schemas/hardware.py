"""How and where training runs."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, ValidatorFunctionWrapHandler, field_validator

from schemas.base import MAX_COUNT, MAX_TOKENS, StrictModel

TrainedWeights = Literal["fp32", "bf16_stochastic"]


class Hardware(StrictModel):
    """Precision, batch shape and backend; the plan checks memory against `vram_gb`."""

    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto picks CUDA when present.")
    precision: Literal["fp32", "bf16", "fp16"] = Field(default="bf16", description="Mixed-precision mode.")
    batch_size: int = Field(default=16, gt=0, le=MAX_COUNT, description="Prompts per micro-batch per process.")
    batch_tokens: int | None = Field(
        default=None,
        gt=0,
        le=MAX_TOKENS,
        description="Also cap each micro-batch by padded student tokens (prompts x longest prompt), as fairseq's "
        "max_tokens does: a batch closes at batch_size prompts or batch_tokens tokens, whichever comes first, so "
        "short prompts go many to a batch and every step carries a similar amount of work. Raise batch_size with "
        "it, or the prompt cap closes batches first. Must be at least student.max_length. null: batch_size only.",
    )
    grad_accum: int = Field(default=1, gt=0, le=MAX_COUNT, description="Micro-batches per optimizer step.")
    gradient_checkpointing: bool = Field(default=False, description="Recompute student activations to save memory.")
    checkpoint_min_tokens: int | None = Field(
        default=None,
        gt=0,
        description="With gradient_checkpointing: recompute only batches of at least this many padded student "
        "tokens (batch x longest prompt); shorter batches keep their activations and skip the recompute. "
        "null recomputes every batch.",
    )
    backend: Literal["accelerate", "unsloth"] = Field(
        default="accelerate", description="Training backend. unsloth is not supported yet (validate refuses it)."
    )
    distributed: Literal["none", "ddp", "fsdp"] = Field(
        default="none",
        description="none: one process. ddp: data-parallel over the processes a launcher starts (torchrun "
        "--nproc_per_node N -m recipe_runner.cli run FILE); a run launched as several processes needs it. fsdp is "
        "not supported yet (validate refuses it).",
    )
    attention: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        default="sdpa", description="Attention kernel of the student and teacher."
    )
    vram_gb: float | None = Field(default=None, gt=0, description="Memory budget per device the plan checks against.")
    trained_weights: TrainedWeights = Field(
        default="fp32",
        description="fp32: float32 master weights, gradients and AdamW moments with autocast compute (16 bytes per "
        "trained parameter). bf16_stochastic: bfloat16 weights, gradients and moments, each update rounded "
        "stochastically so small steps are not lost (8 bytes per parameter; needs precision bf16).",
    )
    fused_kernels: bool = Field(
        default=True,
        description="Run transformers' eager tanh-GELU as torch's one-kernel gelu(approximate='tanh') and, on CUDA, "
        "its eager RMSNorm as F.rms_norm (one fused kernel each way; a CPU has none, so there it stays): the same "
        "functions in fewer launches; weights and checkpoints are unchanged. false keeps the models exactly as "
        "transformers builds them.",
    )
    compile: bool | Literal["auto"] = Field(
        default="auto",
        description="torch.compile the repeated blocks (student layers and each bolt-on layer in training, teacher "
        "layers in `recipe cache`) and the training loss, dynamic shapes: one compile per block class, reused by "
        "every layer and length. "
        "auto compiles on CUDA (H100, reference recipe: training step 378 -> 129 ms, teacher forward 35% -> 48% MFU, "
        "after a warm-up of 1-1.5 minutes) and not on a CPU, where the warm-up outweighs the gain on short runs.",
    )

    packed_sequences: bool | Literal["auto"] = Field(
        default="auto",
        description="Train the student and bolt-on on each batch's real tokens laid end to end (no padding), with "
        "flash-attention's variable-length kernel keeping the prompts apart; outputs and losses are unchanged. auto "
        "packs on CUDA in bf16/fp16 when torch has torch.nn.attention.varlen and the models allow it (no attention "
        "dropout, no sliding window), and pads elsewhere. true on a CPU uses a block-diagonal attention mask (T x T "
        "per layer: for checking, not speed). Packing replaces `attention` for the student while training.",
    )

    @field_validator("compile", "packed_sequences", mode="wrap")
    @classmethod
    def _auto_switch_in_one_line(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> bool | str:
        """One problem naming the three values, not one per member of the union."""
        try:
            return handler(value)
        except ValidationError:
            raise ValueError(f"expected true, false or auto, got {value!r}") from None

    seed: int = Field(default=0, ge=0, lt=2**63, description="Seed for weights init, shuffling and dropout.")
    num_workers: int = Field(
        default=0,
        ge=0,
        le=1024,
        description="Data-loader worker processes (tokenize, align and read the cache); they pass batches back "
        "through a Unix socket under TMPDIR, which must be short enough to hold one.",
    )

    def batch_token_bound(self, max_length: int) -> int:
        """The most padded tokens one micro-batch can hold: what memory has to be planned for."""
        full = self.batch_size * max_length
        return full if self.batch_tokens is None else min(full, max(self.batch_tokens, max_length))

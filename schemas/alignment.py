"""How tokens of the student's tokenizer are paired with tokens of the teacher's."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field

from schemas.base import StrictModel

Tier = Literal["matched", "split", "window", "sequence"]
ALL_TIERS: tuple[Tier, ...] = ("matched", "split", "window", "sequence")


class CrossTokenizerAlignment(StrictModel):
    """Tiered alignment from character offsets; works across SentencePiece, byte-level BPE and WordPiece."""

    type: Literal["cross_tokenizer"] = Field(description="Alignment kind.")
    tiers: list[Tier] = Field(
        default_factory=lambda: list(ALL_TIERS),
        min_length=1,
        description="Tiers computed, in priority order: matched (one token each side, same text at the same place), "
        "split (a word's tokens as group means), window (nearby equal text, cosine-gated), sequence (each side's "
        "mean over the words both read whole: no special tokens, nothing past where either side was cut). "
        "Default: all four.",
        json_schema_extra={"default": list(ALL_TIERS)},
    )
    word_window: int = Field(default=2, ge=0, description="Words either side searched when words do not line up.")
    token_window: int = Field(
        default=2, ge=0, description="Window-tier reach: tokens either side of the proportional position."
    )
    min_cosine: float = Field(
        default=0.7, ge=-1, le=1, description="Window-tier pairs are used only when their cosine reaches this."
    )
    lowercase: bool = Field(default=False, description="Compare token texts case-insensitively.")


Alignment = Annotated[Union[CrossTokenizerAlignment], Field(discriminator="type")]

"""What the aligner reads from a tokenizer: ids, character offsets into the text, and which tokens are special.

Offsets rather than decoded strings are the whole trick: ``▁`` (SentencePiece), ``Ġ`` (byte-level BPE) and ``##``
(WordPiece) all disappear once a token is read as the slice of the original text it covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

INDEX_DTYPE = np.int64


@dataclass(frozen=True)
class TokenView:
    """One tokenized text as the aligner needs it: ids, character spans into the text, and which tokens are special.

    ``unknown`` marks the tokenizer's unknown token: its span says which characters it stands for, but not what the
    model saw, so it never counts as "identical text".
    """

    ids: np.ndarray
    offsets: np.ndarray
    special: np.ndarray
    unknown: np.ndarray

    @classmethod
    def build(
        cls,
        ids: Sequence[int],
        offsets: Sequence[tuple[int, int]],
        special: Sequence[bool] | None = None,
        unknown: Sequence[bool] | None = None,
    ) -> TokenView:
        """Builds a view from lists; specials default to tokens with an empty span."""
        offsets_array = np.asarray(offsets, dtype=INDEX_DTYPE).reshape(-1, 2)
        n_tokens = len(offsets_array)
        special_array = (
            offsets_array[:, 0] == offsets_array[:, 1] if special is None else np.asarray(special, dtype=bool)
        )
        unknown_array = np.zeros(n_tokens, dtype=bool) if unknown is None else np.asarray(unknown, dtype=bool)
        return cls(np.asarray(ids, dtype=INDEX_DTYPE), offsets_array, special_array, unknown_array)

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def n_real(self) -> int:
        """Tokens that stand for text (not padding, BOS/EOS, CLS/SEP)."""
        return int(len(self.special) - self.special.sum())


def _encoding_to_view(ids: list[int], offsets: list[tuple[int, int]], special: list[int], unk_id: int | None):
    unknown = [unk_id is not None and token_id == unk_id for token_id in ids]
    return TokenView.build(ids, offsets, [bool(flag) for flag in special], unknown)


def _encode(tokenizer: Any, texts: str | list[str], max_length: int) -> Any:
    return tokenizer(
        texts,
        truncation=True,
        max_length=max_length,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_attention_mask=False,
    )


def token_view(tokenizer: Any, text: str, max_length: int) -> TokenView:
    """Tokenizes ``text`` with a fast (offset-capable) transformers tokenizer, truncated as the model will see it."""
    encoding = _encode(tokenizer, text, max_length)
    return _encoding_to_view(
        encoding["input_ids"], encoding["offset_mapping"], encoding["special_tokens_mask"], tokenizer.unk_token_id
    )


def token_views(tokenizer: Any, texts: list[str], max_length: int) -> list[TokenView]:
    """Batch form of :func:`token_view`; one tokenizer call is much cheaper than one per text."""
    if not texts:
        return []
    encoding = _encode(tokenizer, texts, max_length)
    return [
        _encoding_to_view(ids, offsets, special, tokenizer.unk_token_id)
        for ids, offsets, special in zip(
            encoding["input_ids"], encoding["offset_mapping"], encoding["special_tokens_mask"], strict=True
        )
    ]

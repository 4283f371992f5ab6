"""Token ids of a prompt that a model is to continue.

Some tokenizers append their end-of-text to every text they encode (T5's, and the tiny ones this repo ships). A
continuation written after it starts a new document: the teacher's answers, the student's on-policy samples and
`recipe infer` all continue the prompt itself, so that token is left out here (what a tokenizer puts before a
text, such as a beginning-of-text, stays).
"""

from __future__ import annotations

from typing import Any


def writes_end(tokenizer: Any) -> bool:
    """Whether `tokenizer` appends its end-of-text to a text by itself."""
    eos = tokenizer.eos_token_id
    return eos is not None and tokenizer("a")["input_ids"][-1:] == [eos]


def prompt_ids(tokenizer: Any, prompts: list[str], max_length: int | None = None) -> list[list[int]]:
    """Each prompt's ids, cut at `max_length` tokens when given, without an end-of-text the tokenizer appended."""
    if not writes_end(tokenizer):
        return tokenizer(prompts, truncation=max_length is not None, max_length=max_length)["input_ids"]
    longer = None if max_length is None else max_length + 1  # room for the end-of-text dropped below
    rows = tokenizer(prompts, truncation=longer is not None, max_length=longer)["input_ids"]
    eos = tokenizer.eos_token_id
    return [row[:-1] if row[-1:] == [eos] else row for row in rows]

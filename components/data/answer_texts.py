"""A prompt and the teacher's written answer as one text, for models that read it through two tokenizers.

Across two vocabularies the models share no token ids, only characters: both read `prompt + answer` as one
string, so the aligner can pair their tokens by character offsets. The answer is kept whole where it fits in the
student's `max_length`, and the prompt is cut (at a token boundary) to make room, as in one vocabulary.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from components.alignment.views import TokenView, token_view
from components.data.prompt_ids import writes_end

# Far beyond any model's context: a first tokenization that counts every token before deciding what to cut.
_UNCUT = 1 << 30


class AnswerText(NamedTuple):
    """The text both models read, the student's tokens of it (ending in its end-of-text, when it has one), and
    the index of the student's first answer token: positions from the one before it on predict the answer."""

    text: str
    student: TokenView
    answer_token: int


def joined(prompt: str, answer: str, spaced: bool = True) -> tuple[str, int]:
    """`prompt + answer` with one space between them unless the answer starts with whitespace (a decoded answer
    may or may not carry the space that sets it apart; `spaced=False`: an answer decoded after its prompt, which
    carries exactly what follows it), and the character where the answer part begins."""
    if not spaced or not prompt or not answer or answer[0].isspace():
        return prompt + answer, len(prompt)
    return f"{prompt} {answer}", len(prompt)


def _with_end(view: TokenView, eos: int | None, end: int) -> TokenView:
    if eos is None or (len(view) and view.ids[-1] == eos):
        return view
    return TokenView(
        np.append(view.ids, eos),
        np.vstack([view.offsets, [[end, end]]]),
        np.append(view.special, True),
        np.append(view.unknown, False),
    )


def _first_answer_token(view: TokenView, start: int) -> int:
    """The token after the prompt's last one: the answer's first, or the end-of-text after an empty answer."""
    prompt_tokens = np.flatnonzero(~view.special & (view.offsets[:, 0] < start))
    if len(prompt_tokens):
        return int(prompt_tokens[-1]) + 1
    text_tokens = np.flatnonzero(~view.special)
    return int(text_tokens[0]) if len(text_tokens) else len(view)


def fitted_prompt(prompt: str, answer: str, tokenizer: Any, limit: int, spaced: bool = True) -> str:
    """`prompt` cut from its end, a whole token of `tokenizer` at a time, so that it and `answer` (joined as
    `joined` does) fit in `limit` tokens (special ones included); "" when the answer alone fills them."""
    text, start = joined(prompt, answer, spaced)
    view = token_view(tokenizer, text, _UNCUT)
    over = len(view) - limit
    if over <= 0:
        return prompt
    prompt_tokens = np.flatnonzero(~view.special & (view.offsets[:, 0] < start))
    kept = len(prompt_tokens) - over
    return prompt[: int(view.offsets[prompt_tokens[kept], 0])].rstrip() if kept > 0 else ""


def answer_text(
    prompt: str,
    answer: str,
    tokenizer: Any,
    max_length: int,
    teacher: tuple[Any, int] | None = None,
    ended: bool = True,
    spaced: bool = True,
) -> AnswerText:
    """`prompt` and `answer` joined and tokenized by the student's `tokenizer` within `max_length` tokens, its
    end-of-text included; the prompt gives way first, from its end, so that the answer also stays whole for the
    `teacher` (its tokenizer and max_length), which reads the same text. An answer longer than the student reads
    is cut at its end, with no end-of-text after it (it did not end there), as is one that has not `ended` (a
    sample stopped at its token budget). `spaced`: as `joined` takes it."""
    eos = tokenizer.eos_token_id
    ends = writes_end(tokenizer)
    limit = max_length - (eos is not None and not ends)
    if teacher is not None:
        prompt = fitted_prompt(prompt, answer, *teacher, spaced)
    prompt = fitted_prompt(prompt, answer, tokenizer, limit, spaced)
    text, start = joined(prompt, answer if prompt else answer.lstrip(), spaced)
    view = token_view(tokenizer, text, limit)  # the seam may tokenize differently: cut at the limit anyway
    real = view.offsets[~view.special]
    cut = len(real) and real[:, 1].max() < len(text.rstrip())
    if cut or not ended:  # the answer does not end here
        if ends and view.ids[-1] == eos:
            view = TokenView(view.ids[:-1], view.offsets[:-1], view.special[:-1], view.unknown[:-1])
    else:
        view = _with_end(view, eos, len(text))
    return AnswerText(text, view, _first_answer_token(view, start))

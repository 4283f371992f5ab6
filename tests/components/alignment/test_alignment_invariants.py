"""Invariants every alignment must keep, on random texts through the shipped tiny tokenizers."""

from __future__ import annotations

from itertools import permutations
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from components.alignment import CrossTokenizerAligner, TokenView, token_view
from schemas.alignment import CrossTokenizerAlignment

REPO_ROOT = Path(__file__).resolve().parents[3]
TOKENIZER_DIRS = {
    "qwen": REPO_ROOT / "data/tokenizers/tiny_qwen",
    "t5": REPO_ROOT / "data/tokenizers/tiny_t5",
    "wordpiece": REPO_ROOT / "tests/assets/tokenizers/tiny_wordpiece",
}
PIECES = [
    "a",
    "dog",
    "café",
    "Zürich",
    "naïve",
    "35mm",
    "f/1.4",
    "4k",
    "close-up",
    "ǽ",
    "日本",
    "ﬁne",
    "(",
    ")",
    "!",
    "'s",
]
SEPARATORS = [" ", " ", " ", ", ", "-", "", "  ", ". "]

texts = st.lists(st.tuples(st.sampled_from(PIECES), st.sampled_from(SEPARATORS)), max_size=12).map(
    lambda parts: "".join(piece + separator for piece, separator in parts)
)


@pytest.fixture(scope="module")
def tokenizers():
    return {name: AutoTokenizer.from_pretrained(path) for name, path in TOKENIZER_DIRS.items()}


def covered_chars(text: str, view: TokenView, position: int) -> set[int]:
    """Non-space characters a token stands for; a whitespace-only token stands for the next word's first character."""
    start, end = view.offsets[position].tolist()
    chars = {i for i in range(start, end) if not text[i].isspace()}
    if not chars:
        following = next((i for i in range(end, len(text)) if not text[i].isspace()), None)
        chars = {following} if following is not None else set()
    return chars


def check_invariants(text: str, student: TokenView, teacher: TokenView) -> None:
    alignment = CrossTokenizerAligner(CrossTokenizerAlignment(type="cross_tokenizer")).align(text, student, teacher)
    tiers_s = [alignment.matched_s.tolist(), alignment.split_s.tolist(), alignment.window_s.tolist()]
    all_s = [s for tier in tiers_s for s in tier]
    assert len(all_s) == len(set(all_s)), "a student token is in at most one tier, once"
    assert len(set(alignment.matched_t.tolist())) == len(alignment.matched_t)
    for side, positions in ((student, all_s), (teacher, alignment.matched_t.tolist() + alignment.split_t.tolist())):
        assert all(0 <= p < len(side) and not side.special[p] for p in positions)

    def token_text(view: TokenView, position: int) -> str:
        return text[slice(*view.offsets[position].tolist())].strip()

    for s, t in zip(alignment.matched_s.tolist(), alignment.matched_t.tolist(), strict=True):
        assert token_text(student, s) == token_text(teacher, t)
    for s, t in zip(alignment.window_s.tolist(), alignment.window_t.tolist(), strict=True):
        assert token_text(student, s) == token_text(teacher, t)

    n_groups = alignment.n_split_groups
    assert sorted(set(alignment.split_s_group.tolist())) == list(range(n_groups))
    assert sorted(set(alignment.split_t_group.tolist())) == list(range(n_groups))
    for group in range(n_groups):
        chars_s = set().union(
            *(covered_chars(text, student, s) for s in alignment.split_s[alignment.split_s_group == group].tolist())
        )
        chars_t = set().union(
            *(covered_chars(text, teacher, t) for t in alignment.split_t[alignment.split_t_group == group].tolist())
        )
        assert chars_s == chars_t, "a split group compares the same characters on both sides"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=texts, student_length=st.integers(1, 48), teacher_length=st.integers(1, 48), pair=st.integers(0, 5))
def test_invariants_hold_for_every_tokenizer_pair(tokenizers, text, student_length, teacher_length, pair):
    student_name, teacher_name = list(permutations(TOKENIZER_DIRS, 2))[pair]
    student = token_view(tokenizers[student_name], text, student_length)
    teacher = token_view(tokenizers[teacher_name], text, teacher_length)
    check_invariants(text, student, teacher)

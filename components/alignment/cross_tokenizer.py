"""Pairs student tokens with teacher tokens of a different tokenizer, using character offsets only.

Offsets (not decoded strings) make ``▁`` (SentencePiece), ``Ġ`` (byte-level BPE) and ``##`` (WordPiece) look the same:
a token's text is the slice of the original text it covers, whitespace stripped. Everything here is plain Python and
numpy so it runs in DataLoader workers; the device only ever sees the index arrays.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from components.alignment.views import INDEX_DTYPE, TokenView, token_view, token_views
from schemas.alignment import ALL_TIERS, CrossTokenizerAlignment, Tier

__all__ = ["CrossTokenizerAligner", "SampleAlignment", "TokenView", "token_view", "token_views"]

WORD_PATTERN = re.compile(r"\w+|[^\w\s]")
"""Base words: runs of letters/digits, or one punctuation mark; tokens crossing them later merge them into units."""
NON_SPACE = re.compile(r"\S")


def _empty_index() -> np.ndarray:
    return np.zeros(0, dtype=INDEX_DTYPE)


@dataclass(frozen=True)
class SampleAlignment:
    """Token positions (indices into each side's token sequence) paired per tier, for one text.

    Split groups are local ids ``0..G-1``: every student token of group g is compared, as a mean, with every teacher
    token of group g. Window pairs are candidates; the cosine gate is applied on the device.
    """

    matched_s: np.ndarray = field(default_factory=_empty_index)
    matched_t: np.ndarray = field(default_factory=_empty_index)
    split_s: np.ndarray = field(default_factory=_empty_index)
    split_s_group: np.ndarray = field(default_factory=_empty_index)
    split_t: np.ndarray = field(default_factory=_empty_index)
    split_t_group: np.ndarray = field(default_factory=_empty_index)
    window_s: np.ndarray = field(default_factory=_empty_index)
    window_t: np.ndarray = field(default_factory=_empty_index)
    # Tier 4 averages these: each side's tokens of the text both sides read whole (no special tokens, nothing
    # past where either side was cut), so that the two means are of the same words.
    sequence_s: np.ndarray = field(default_factory=_empty_index)
    sequence_t: np.ndarray = field(default_factory=_empty_index)
    tiers: tuple[Tier, ...] = ALL_TIERS

    @property
    def n_split_groups(self) -> int:
        return int(self.split_s_group.max()) + 1 if len(self.split_s_group) else 0

    def covered_student_tokens(self) -> dict[str, set[int]]:
        """Student positions each tier touches, plus ``any`` for their union."""
        covered = {
            "matched": set(self.matched_s.tolist()),
            "split": set(self.split_s.tolist()),
            "window": set(self.window_s.tolist()),
        }
        covered["any"] = covered["matched"] | covered["split"] | covered["window"]
        return covered

    def coverage(self, n_student_real_tokens: int) -> dict[str, float]:
        """Fraction of the student's real tokens each tier covers (window: candidates, before the cosine gate)."""
        if n_student_real_tokens <= 0:
            fractions = dict.fromkeys(("matched", "split", "window", "any"), 0.0)
        else:
            fractions = {
                tier: len(positions) / n_student_real_tokens
                for tier, positions in self.covered_student_tokens().items()
            }
        if "sequence" in self.tiers:
            fractions["sequence"] = len(self.sequence_s) / n_student_real_tokens if n_student_real_tokens > 0 else 0.0
        return fractions


@dataclass
class _Side:
    """Real tokens of one side, in sequence order, reduced to what the tiers compare."""

    position: list[int] = field(default_factory=list)
    start: list[int] = field(default_factory=list)
    end: list[int] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    matchable: list[bool] = field(default_factory=list)
    marker: list[bool] = field(default_factory=list)
    unit: list[int] = field(default_factory=list)
    visible_end: int = 0

    def add(self, position: int, start: int, end: int, text: str, matchable: bool, marker: bool) -> None:
        self.position.append(position)
        self.start.append(start)
        self.end.append(end)
        self.text.append(text)
        self.matchable.append(matchable)
        self.marker.append(marker)


def _read_side(text: str, view: TokenView, lowercase: bool) -> _Side:
    """Core spans: offsets with surrounding whitespace stripped.

    A whitespace-only token (a lone ``▁`` or ``Ġ``) marks the start of the next word: it gets that word's first
    character as span and empty text, so it can pair with the other side's marker or join that word's split group.
    Tokens overlapping a neighbour on the same side (bytes of one character) are not matchable by text.
    """
    side = _Side()
    previous = -1
    n_chars = len(text)
    for position, ((start, end), special, unknown) in enumerate(
        zip(view.offsets.tolist(), view.special.tolist(), view.unknown.tolist(), strict=True)
    ):
        if special or start >= end or end > n_chars:
            continue
        raw = text[start:end]
        stripped = raw.lstrip()
        if not stripped:
            next_char = NON_SPACE.search(text, end)
            if next_char is not None:
                side.add(position, next_char.start(), next_char.start() + 1, "", not unknown, True)
            continue
        core_start = start + len(raw) - len(stripped)
        stripped = stripped.rstrip()
        core_end = core_start + len(stripped)
        token_text = stripped.lower() if lowercase else stripped
        side.add(position, core_start, core_end, token_text, not unknown, False)
        index = len(side.position) - 1
        if previous >= 0 and core_start < side.end[previous]:
            side.matchable[previous] = False
            side.matchable[index] = False
        previous = index
        side.visible_end = max(side.visible_end, core_end)
    return side


def _absorb_lone_spaces(side: _Side, other: _Side) -> None:
    """A lone space token the other side has no counterpart for (" " + "3" against " 3" or "3").

    The word's first token on this side then stays out of tier 1, so the split tier compares lone space plus that
    token with the other side's token(s) as a group instead of leaving the lone space unpaired.
    """
    other_markers = {start for start, marker in zip(other.start, other.marker, strict=True) if marker}
    for index in range(len(side.position) - 1):
        start = side.start[index]
        if side.marker[index] and start not in other_markers:
            follower = index + 1
            if side.start[follower] == start and not side.marker[follower]:
                side.matchable[follower] = False


@dataclass(frozen=True)
class _Units:
    """Aligned words: base words merged wherever a token of either side crosses a word boundary."""

    start: list[int]
    end: list[int]


def _assign_units(text: str, student: _Side, teacher: _Side) -> _Units:
    word_spans = [match.span() for match in WORD_PATTERN.finditer(text)]
    char_word = [-1] * len(text)
    for word, (start, end) in enumerate(word_spans):
        char_word[start:end] = [word] * (end - start)
    joins_next = bytearray(len(word_spans))
    for side in (student, teacher):
        for start, end, marker in zip(side.start, side.end, side.marker, strict=True):
            first, last = char_word[start], char_word[end - 1]
            if not marker and last > first:
                joins_next[first:last] = b"\x01" * (last - first)
    unit_of_word, unit_start, unit_end = [], [], []
    for word, (start, end) in enumerate(word_spans):
        if word == 0 or not joins_next[word - 1]:
            unit_start.append(start)
            unit_end.append(end)
        else:
            unit_end[-1] = end
        unit_of_word.append(len(unit_start) - 1)
    for side in (student, teacher):
        side.unit = [unit_of_word[char_word[start]] for start in side.start]
    return _Units(unit_start, unit_end)


def _greedy_pairs(candidates: list[tuple[float, int, int]], pairs_s: list[int], pairs_t: list[int]) -> None:
    """One-to-one pairs, nearest first; ties broken by index so the result never depends on iteration order."""
    candidates.sort()
    used_s: set[int] = set()
    used_t: set[int] = set()
    chosen = []
    for _, s, t in candidates:
        if s not in used_s and t not in used_t:
            used_s.add(s)
            used_t.add(t)
            chosen.append((s, t))
    for s, t in sorted(chosen):
        pairs_s.append(s)
        pairs_t.append(t)


def _tokens_by_unit(side: _Side, complete_units: int) -> dict[int, list[int]]:
    by_unit: dict[int, list[int]] = {}
    for index, unit in enumerate(side.unit):
        if unit < complete_units:
            by_unit.setdefault(unit, []).append(index)
    return by_unit


def _match_in_units(student: _Side, teacher: _Side, units: _Units, complete_units: int) -> tuple[list[int], list[int]]:
    """Tier 1: identical text over the same characters of the same unit (identical text elsewhere in it, the
    first "a" of "aba" against the last, is other characters: never a pair)."""
    pairs_s: list[int] = []
    pairs_t: list[int] = []
    teacher_by_unit = _tokens_by_unit(teacher, complete_units)
    for unit, student_tokens in _tokens_by_unit(student, complete_units).items():
        teacher_tokens = teacher_by_unit.get(unit)
        if not teacher_tokens:
            continue
        if len(student_tokens) == 1 and len(teacher_tokens) == 1:
            s, t = student_tokens[0], teacher_tokens[0]
            if student.matchable[s] and teacher.matchable[t] and student.text[s] == teacher.text[t]:
                pairs_s.append(s)
                pairs_t.append(t)
            continue
        origin, width = units.start[unit], units.end[unit] - units.start[unit]
        candidates = []
        for s in student_tokens:
            if not student.matchable[s]:
                continue
            s_position = (student.start[s] + student.end[s]) / 2 - origin
            for t in teacher_tokens:
                same_place = (student.start[s], student.end[s]) == (teacher.start[t], teacher.end[t])
                if teacher.matchable[t] and student.text[s] == teacher.text[t] and same_place:
                    t_position = (teacher.start[t] + teacher.end[t]) / 2 - origin
                    candidates.append((abs(s_position - t_position) / width, s, t))
        _greedy_pairs(candidates, pairs_s, pairs_t)
    return pairs_s, pairs_t


def _merged_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _split_groups(
    student: _Side, teacher: _Side, leftover_s: list[int], leftover_t: list[int]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Tier 2: connected components of overlapping leftover spans; (token, group) pairs per side.

    A component is kept only when both sides cover exactly the same characters, so a word cut by truncation or a
    character one tokenizer dropped never yields a mean over different text.
    """
    items = sorted(
        [(student.start[s], student.end[s], 0, s) for s in leftover_s]
        + [(teacher.start[t], teacher.end[t], 1, t) for t in leftover_t]
    )
    groups_s: list[tuple[int, int]] = []
    groups_t: list[tuple[int, int]] = []
    component: list[tuple[int, int, int, int]] = []
    reach = -1

    def close_component() -> None:
        spans_s = [(start, end) for start, end, side, _ in component if side == 0]
        spans_t = [(start, end) for start, end, side, _ in component if side == 1]
        if spans_s and spans_t and _merged_spans(spans_s) == _merged_spans(spans_t):
            group = groups_t[-1][1] + 1 if groups_t else 0
            for _, _, side, index in component:
                (groups_s if side == 0 else groups_t).append((index, group))

    for item in items:
        if component and item[0] >= reach:
            close_component()
            component = []
        component.append(item)
        reach = max(reach, item[1]) if len(component) > 1 else item[1]
    if component:
        close_component()
    return groups_s, groups_t


class CrossTokenizerAligner:
    """Computes the tiers a :class:`CrossTokenizerAlignment` asks for; deterministic and free of shared state."""

    def __init__(self, spec: CrossTokenizerAlignment) -> None:
        self.spec = spec
        self.tiers: tuple[Tier, ...] = tuple(spec.tiers)

    def align(self, text: str, student: TokenView, teacher: TokenView) -> SampleAlignment:
        """Pairs real tokens of ``student`` and ``teacher``, both tokenizations of ``text``."""
        if not text:
            return SampleAlignment(tiers=self.tiers)
        s_side = _read_side(text, student, self.spec.lowercase)
        t_side = _read_side(text, teacher, self.spec.lowercase)
        if not s_side.position or not t_side.position:
            return SampleAlignment(tiers=self.tiers)
        _absorb_lone_spaces(s_side, t_side)
        _absorb_lone_spaces(t_side, s_side)
        units = _assign_units(text, s_side, t_side)
        # Units cut by truncation on either side take part in no tier.
        common_end = min(s_side.visible_end, t_side.visible_end)
        complete_units = sum(1 for end in units.end if end <= common_end)

        matched_s: list[int] = []
        matched_t: list[int] = []
        if "matched" in self.tiers:
            matched_s, matched_t = _match_in_units(s_side, t_side, units, complete_units)
        groups_s: list[tuple[int, int]] = []
        groups_t: list[tuple[int, int]] = []
        if "split" in self.tiers:
            taken_s, taken_t = set(matched_s), set(matched_t)
            leftover_s = [s for s, unit in enumerate(s_side.unit) if unit < complete_units and s not in taken_s]
            leftover_t = [t for t, unit in enumerate(t_side.unit) if unit < complete_units and t not in taken_t]
            groups_s, groups_t = _split_groups(s_side, t_side, leftover_s, leftover_t)
        window_s: list[int] = []
        window_t: list[int] = []
        if "window" in self.tiers:
            window_s, window_t = self._window_pairs(
                s_side, t_side, complete_units, set(matched_s) | {s for s, _ in groups_s}, set(matched_t)
            )

        def positions(side: _Side, indices: list[int]) -> np.ndarray:
            return np.array([side.position[i] for i in indices], dtype=INDEX_DTYPE)

        def whole(side: _Side) -> np.ndarray:
            if "sequence" not in self.tiers:
                return _empty_index()
            return positions(side, [i for i, unit in enumerate(side.unit) if unit < complete_units])

        return SampleAlignment(
            matched_s=positions(s_side, matched_s),
            matched_t=positions(t_side, matched_t),
            split_s=positions(s_side, [s for s, _ in groups_s]),
            split_s_group=np.array([g for _, g in groups_s], dtype=INDEX_DTYPE),
            split_t=positions(t_side, [t for t, _ in groups_t]),
            split_t_group=np.array([g for _, g in groups_t], dtype=INDEX_DTYPE),
            window_s=positions(s_side, window_s),
            window_t=positions(t_side, window_t),
            sequence_s=whole(s_side),
            sequence_t=whole(t_side),
            tiers=self.tiers,
        )

    def _window_pairs(
        self, student: _Side, teacher: _Side, complete_units: int, covered_s: set[int], matched_t: set[int]
    ) -> tuple[list[int], list[int]]:
        """Tier 3: identical text within ``token_window`` tokens of the proportional position and ``word_window`` units.

        Positions count only tokens of units both sides show completely, so truncation does not stretch the scale.
        """
        ranked_s = [s for s, unit in enumerate(student.unit) if unit < complete_units]
        ranked_t = [t for t, unit in enumerate(teacher.unit) if unit < complete_units]
        if not ranked_s or not ranked_t:
            return [], []
        scale = len(ranked_t) / len(ranked_s)
        reach = self.spec.token_window
        candidates = []
        for rank_s, s in enumerate(ranked_s):
            if s in covered_s or not student.matchable[s]:
                continue
            proportional = (rank_s + 0.5) * scale - 0.5
            centre = math.floor(proportional + 0.5)
            for rank_t in range(max(0, centre - reach), min(len(ranked_t), centre + reach + 1)):
                t = ranked_t[rank_t]
                if (
                    t not in matched_t
                    and teacher.matchable[t]
                    and teacher.text[t] == student.text[s]
                    and abs(teacher.unit[t] - student.unit[s]) <= self.spec.word_window
                ):
                    candidates.append((abs(rank_t - proportional), s, t))
        pairs_s: list[int] = []
        pairs_t: list[int] = []
        _greedy_pairs(candidates, pairs_s, pairs_t)
        return pairs_s, pairs_t

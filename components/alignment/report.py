"""How much of the student's text each alignment tier reaches, so a recipe's tier weights can be judged."""

from __future__ import annotations

from typing import Any

from components.alignment.cross_tokenizer import CrossTokenizerAligner
from components.alignment.views import token_views
from schemas.alignment import CrossTokenizerAlignment

COVERAGE_KEYS = ("matched", "split", "window", "any")


def coverage_report(
    texts: list[str],
    student_tokenizer: Any,
    teacher_tokenizer: Any,
    spec: CrossTokenizerAlignment,
    student_max_length: int,
    teacher_max_length: int,
) -> dict[str, Any]:
    """Per-tier fraction of student real tokens covered over ``texts`` (window: candidates before the cosine gate)."""
    aligner = CrossTokenizerAligner(spec)
    student_views = token_views(student_tokenizer, texts, student_max_length)
    teacher_views = token_views(teacher_tokenizer, texts, teacher_max_length)
    sequence = "sequence" in spec.tiers  # the words both sides read whole, each side's tokens of them averaged
    covered = dict.fromkeys(COVERAGE_KEYS + (("sequence",) if sequence else ()), 0)
    pairs = {"matched_pairs": 0, "split_groups": 0, "split_student_tokens": 0, "split_teacher_tokens": 0}
    pairs["window_candidates"] = 0
    student_tokens = teacher_tokens = 0
    for text, student, teacher in zip(texts, student_views, teacher_views, strict=True):
        alignment = aligner.align(text, student, teacher)
        student_tokens += student.n_real
        teacher_tokens += teacher.n_real
        for tier, positions in alignment.covered_student_tokens().items():
            covered[tier] += len(positions)
        if sequence:
            covered["sequence"] += len(alignment.sequence_s)
        pairs["matched_pairs"] += len(alignment.matched_s)
        pairs["split_groups"] += alignment.n_split_groups
        pairs["split_student_tokens"] += len(alignment.split_s)
        pairs["split_teacher_tokens"] += len(alignment.split_t)
        pairs["window_candidates"] += len(alignment.window_s)
    coverage = {tier: (count / student_tokens if student_tokens else 0.0) for tier, count in covered.items()}
    return {
        "texts": len(texts),
        "tiers": list(spec.tiers),
        "student_real_tokens": student_tokens,
        "teacher_real_tokens": teacher_tokens,
        "covered_student_tokens": covered,
        "coverage": coverage,
        "pairs": pairs,
    }


def format_report(report: dict[str, Any]) -> str:
    """A plain-text table: one row per tier with covered tokens and percentage."""
    lines = [
        f"texts: {report['texts']}   student real tokens: {report['student_real_tokens']}   "
        f"teacher real tokens: {report['teacher_real_tokens']}",
        f"{'tier':<10}{'tokens':>10}{'coverage':>11}",
    ]
    for tier, count in report["covered_student_tokens"].items():
        lines.append(f"{tier:<10}{count:>10}{report['coverage'][tier]:>10.1%}")
    lines.append("pairs: " + ", ".join(f"{name} {count}" for name, count in report["pairs"].items()))
    return "\n".join(lines)

"""Coverage of the shipped eval prompts with the shipped tiny tokenizers (Qwen-style student, T5-style teacher)."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from components.alignment.report import coverage_report, format_report
from schemas.alignment import CrossTokenizerAlignment

REPO_ROOT = Path(__file__).resolve().parents[3]
EVAL_PROMPTS = REPO_ROOT / "data/prompts/eval.txt"


@pytest.fixture(scope="module")
def eval_report() -> dict:
    texts = EVAL_PROMPTS.read_text(encoding="utf-8").splitlines()
    return coverage_report(
        texts,
        AutoTokenizer.from_pretrained(REPO_ROOT / "data/tokenizers/tiny_qwen"),
        AutoTokenizer.from_pretrained(REPO_ROOT / "data/tokenizers/tiny_t5"),
        CrossTokenizerAlignment(type="cross_tokenizer"),
        student_max_length=512,
        teacher_max_length=512,
    )


def test_matched_tier_covers_most_student_tokens(eval_report):
    assert eval_report["texts"] == 80
    assert eval_report["coverage"]["matched"] >= 0.80


def test_all_tiers_together_cover_nearly_every_student_token(eval_report):
    assert eval_report["coverage"]["any"] >= 0.99
    covered = eval_report["covered_student_tokens"]
    assert covered["any"] <= covered["matched"] + covered["split"] + covered["window"]
    assert eval_report["pairs"]["matched_pairs"] == covered["matched"]


def test_format_report_lists_every_tier(eval_report):
    table = format_report(eval_report)
    for tier in ("matched", "split", "window", "any", "sequence"):
        assert tier in table
    assert f"{eval_report['coverage']['matched']:.1%}" in table


def test_short_teacher_max_length_lowers_coverage_instead_of_inventing_pairs():
    texts = EVAL_PROMPTS.read_text(encoding="utf-8").splitlines()[:20]
    student = AutoTokenizer.from_pretrained(REPO_ROOT / "data/tokenizers/tiny_qwen")
    teacher = AutoTokenizer.from_pretrained(REPO_ROOT / "data/tokenizers/tiny_t5")
    spec = CrossTokenizerAlignment(type="cross_tokenizer")
    full = coverage_report(texts, student, teacher, spec, 512, 512)
    cut = coverage_report(texts, student, teacher, spec, 512, 8)
    assert cut["teacher_real_tokens"] <= 20 * 7
    assert cut["coverage"]["any"] < full["coverage"]["any"]

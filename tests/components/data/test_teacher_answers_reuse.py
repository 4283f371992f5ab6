"""Answers written for other data are taken for the prompts they answer: edited data asks only what is new."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.data.teacher_answers import AnswersError, reusable_answers, write_answers

PROMPTS = [f"prompt {i}" for i in range(7)]
IDENTITY = {"teacher": "t", "max_new_tokens": 4}


def _asked(calls: list):
    def answer(start: int, prompts: list[str]) -> list[str]:
        calls.append((start, list(prompts)))
        return [f"new answer to {p}" for p in prompts]

    return answer


def test_known_answers_are_taken_and_only_the_others_asked_in_full_batches(tmp_path: Path) -> None:
    write_answers(tmp_path / "old", "train", PROMPTS, IDENTITY, _asked([]), batch_size=3)
    known, skipped = reusable_answers(tmp_path / "old", IDENTITY)
    assert len(known) == len(PROMPTS) and skipped == []

    edited = ["prompt 0", "a new one", "prompt 2", "prompt 3", "another", "prompt 5", "third", "fourth"]
    calls: list = []
    written = write_answers(tmp_path / "new", "train", edited, IDENTITY, _asked(calls), batch_size=2, known=known)
    assert calls == [(1, ["a new one", "another"]), (6, ["third", "fourth"])], "new prompts only, two at a time"
    assert written[0] == "new answer to prompt 0" and written[1] == "new answer to a new one"
    assert written[5] == "new answer to prompt 5" and written[7] == "new answer to fourth"


def test_every_answer_known_asks_the_teacher_nothing(tmp_path: Path) -> None:
    write_answers(tmp_path / "old", "eval", PROMPTS, IDENTITY, _asked([]), batch_size=3)
    known, _ = reusable_answers(tmp_path / "old", IDENTITY)
    calls: list = []
    written = write_answers(tmp_path / "new", "train", PROMPTS[::-1], IDENTITY, _asked(calls), 3, known=known)
    assert calls == [] and written == [f"new answer to {p}" for p in PROMPTS[::-1]]


def test_half_written_answers_are_taken_and_a_cut_record_passed_over(tmp_path: Path) -> None:
    def killed(start: int, prompts: list[str]) -> list[str]:
        if start >= 4:
            raise KeyboardInterrupt
        return [f"answer to {p}" for p in prompts]

    with pytest.raises(KeyboardInterrupt):
        write_answers(tmp_path / "old", "train", PROMPTS, IDENTITY, killed, batch_size=2)
    partial = tmp_path / "old" / "train.jsonl.partial"
    partial.write_text(partial.read_text() + '{"answer": "cut sh', encoding="utf-8")  # killed mid-write
    known, _ = reusable_answers(tmp_path / "old", IDENTITY)
    assert sorted(known.values()) == [f"answer to prompt {i}" for i in range(4)]


def test_answers_made_with_other_settings_or_naming_no_prompt_are_not_taken(tmp_path: Path) -> None:
    write_answers(tmp_path / "old", "train", PROMPTS, {**IDENTITY, "max_new_tokens": 8}, _asked([]), batch_size=3)
    with pytest.raises(
        AnswersError,
        match=r"no teacher answers can be taken from it: .*train.jsonl: made with other "
        r"teacher settings \(teacher.answers.max_new_tokens 8 -> 4\)",
    ):
        reusable_answers(tmp_path / "old", IDENTITY)
    write_answers(tmp_path / "older", "train", PROMPTS, IDENTITY, _asked([]), batch_size=3)
    final = tmp_path / "older" / "train.jsonl"
    final.write_text(final.read_text().replace(', "prompt": "', ', "was": "'), encoding="utf-8")
    with pytest.raises(AnswersError, match="7 answer.s. written before answers named their prompt"):
        reusable_answers(tmp_path / "older", IDENTITY)
    with pytest.raises(AnswersError, match="no such directory"):
        reusable_answers(tmp_path / "nowhere", IDENTITY)

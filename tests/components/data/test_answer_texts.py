"""Prompt + written answer as one text for two tokenizers: the answer stays whole, the prompt gives way, and the
student's answer tokens (then its end-of-text) are the ones scored and compared."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from components.alignment import CrossTokenizerAligner, token_view
from components.data.answer_texts import answer_text, joined
from components.data.pipeline import Collator, PromptPairs
from schemas.alignment import CrossTokenizerAlignment

TOKENIZERS = Path(__file__).resolve().parents[3] / "data" / "tokenizers"
PROMPT = "a small red fox sleeping under an old oak tree"
ANSWER = "in the golden light of a quiet autumn evening"


@pytest.fixture(scope="module", params=["tiny_qwen", "tiny_t5"])
def tokenizer(request):
    return AutoTokenizer.from_pretrained(TOKENIZERS / request.param)


def test_the_answer_is_set_apart_by_one_space_unless_it_brings_its_own() -> None:
    assert joined("a fox", "runs") == ("a fox runs", 5)
    assert joined("a fox", " runs") == ("a fox runs", 5)
    assert joined("a fox", "\nruns") == ("a fox\nruns", 5)
    assert joined("a fox", "") == ("a fox", 5)


def test_the_student_reads_the_whole_text_and_its_answer_tokens_spell_the_answer(tokenizer) -> None:
    fitted = answer_text(PROMPT, ANSWER, tokenizer, 128)
    assert fitted.text == f"{PROMPT} {ANSWER}"
    ids = fitted.student.ids.tolist()
    assert ids[-1] == tokenizer.eos_token_id and ids.count(tokenizer.eos_token_id) == 1
    answer = tokenizer.decode(ids[fitted.answer_token :], skip_special_tokens=True)
    prompt = tokenizer.decode(ids[: fitted.answer_token], skip_special_tokens=True)
    assert answer.strip() == ANSWER and prompt.strip() == PROMPT


def test_a_long_prompt_is_cut_from_its_end_so_the_answer_and_end_of_text_fit(tokenizer) -> None:
    whole = answer_text(PROMPT, ANSWER, tokenizer, 512)
    answer_tokens = len(whole.student) - whole.answer_token
    fitted = answer_text(PROMPT, ANSWER, tokenizer, answer_tokens + 4)
    assert len(fitted.student) <= answer_tokens + 4
    assert fitted.text.endswith(ANSWER) and PROMPT.startswith(fitted.text[: -len(ANSWER)].strip())
    assert len(fitted.text) < len(whole.text)  # some of the prompt went, none of the answer
    ids = fitted.student.ids.tolist()
    assert tokenizer.decode(ids[fitted.answer_token :], skip_special_tokens=True).strip() == ANSWER


def test_an_answer_longer_than_the_student_reads_is_cut_at_its_end_with_no_end_of_text(tokenizer) -> None:
    """As with one vocabulary: a cut answer did not end there, so the student is not taught to stop."""
    fitted = answer_text(PROMPT, " ".join([ANSWER] * 20), tokenizer, 16)
    assert 14 <= len(fitted.student) <= 16 and tokenizer.eos_token_id not in fitted.student.ids.tolist()
    assert fitted.answer_token == 0 and fitted.text.startswith(ANSWER)  # no room for any of the prompt


def test_the_prompt_also_gives_way_for_the_teacher_so_it_reads_the_whole_answer() -> None:
    student = AutoTokenizer.from_pretrained(TOKENIZERS / "tiny_qwen")
    teacher = AutoTokenizer.from_pretrained(TOKENIZERS / "tiny_t5")
    answer_tokens = len(token_view(teacher, ANSWER, 512))
    fitted = answer_text(PROMPT, ANSWER, student, 128, (teacher, answer_tokens + 3))
    seen = token_view(teacher, fitted.text, 10_000)
    assert len(seen) <= answer_tokens + 3 and fitted.text.endswith(ANSWER)
    assert PROMPT.startswith(fitted.text[: -len(ANSWER)].strip()) and len(fitted.text) < len(PROMPT) + len(ANSWER)


def test_pairs_with_answers_score_and_align_the_answer_only() -> None:
    student = AutoTokenizer.from_pretrained(TOKENIZERS / "tiny_qwen")
    teacher = AutoTokenizer.from_pretrained(TOKENIZERS / "tiny_t5")
    aligner = CrossTokenizerAligner(CrossTokenizerAlignment(type="cross_tokenizer"))
    pairs = PromptPairs([PROMPT, "a fox"], student, teacher, aligner, 64, 64, answers=[ANSWER, " runs home"])
    items = [pairs[0], pairs[1]]
    assert pairs.token_lengths() >= [len(item["student_ids"]) for item in items]
    batch = Collator(0, 0, False)(items)
    assert batch.answer_starts.tolist() == [item["answer_start"] for item in items]
    lengths = batch.student_mask.sum(1).tolist()
    for row, scored in enumerate(batch.scored.split(lengths)):
        start = items[row]["answer_start"]
        assert scored.nonzero().flatten().tolist() == list(range(start - 1, lengths[row] - 1))
    a = batch.alignment
    in_answer = a.matched_s >= batch.answer_starts[a.matched_b]
    assert in_answer.any() and (~in_answer).any()  # prompt words align too; the objective keeps the answer's
    assert torch.equal(batch.to(torch.device("cpu")).scored, batch.scored)


def test_an_answer_that_has_not_ended_gets_no_end_of_text(tokenizer) -> None:
    """A student's sample stopped at its token budget: the text goes on, so no end-of-text is read after it."""
    ended = answer_text(PROMPT, ANSWER, tokenizer, 128).student.ids.tolist()
    going_on = answer_text(PROMPT, ANSWER, tokenizer, 128, ended=False).student.ids.tolist()
    assert ended[-1] == tokenizer.eos_token_id and tokenizer.eos_token_id not in going_on
    assert going_on == ended[:-1]


def test_the_prompt_the_student_continues_leaves_room_on_both_sides() -> None:
    student = AutoTokenizer.from_pretrained(TOKENIZERS / "tiny_qwen")
    teacher = AutoTokenizer.from_pretrained(TOKENIZERS / "tiny_t5")
    aligner = CrossTokenizerAligner(CrossTokenizerAlignment(type="cross_tokenizer"))
    whole = len(token_view(student, PROMPT, 512))
    pairs = PromptPairs([PROMPT], student, teacher, aligner, 64, 64)
    assert student.decode(pairs.prompt_ids(0, 8)) == PROMPT  # room to spare: all of it
    pairs = PromptPairs([PROMPT], student, teacher, aligner, whole, 64)
    cut = pairs.prompt_ids(0, 4)
    assert len(cut) + 4 <= whole and PROMPT.startswith(student.decode(cut))  # its end gives way
    teacher_tokens = len(token_view(teacher, PROMPT, 512))
    pairs = PromptPairs([PROMPT], student, teacher, aligner, 64, teacher_tokens)
    kept = student.decode(pairs.prompt_ids(0, 4))
    assert len(token_view(teacher, kept, 512)) + 4 <= teacher_tokens and PROMPT.startswith(kept)

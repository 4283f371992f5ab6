"""Hand-checked alignments for SentencePiece-, byte-level-BPE- and WordPiece-style offsets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from components.alignment import CrossTokenizerAligner, SampleAlignment, TokenView, token_view
from schemas.alignment import CrossTokenizerAlignment

REPO_ROOT = Path(__file__).resolve().parents[3]
QWEN_DIR = REPO_ROOT / "data/tokenizers/tiny_qwen"
T5_DIR = REPO_ROOT / "data/tokenizers/tiny_t5"
WORDPIECE_DIR = REPO_ROOT / "tests/assets/tokenizers/tiny_wordpiece"


def spec(**overrides) -> CrossTokenizerAlignment:
    return CrossTokenizerAlignment(type="cross_tokenizer", **overrides)


def view(spans: list[tuple[int, int]], unknown: tuple[int, ...] = ()) -> TokenView:
    """A view whose ids are just positions; (0, 0) spans are special tokens, as transformers reports them."""
    return TokenView.build(
        ids=list(range(len(spans))), offsets=spans, unknown=[i in unknown for i in range(len(spans))]
    )


def listed(alignment: SampleAlignment) -> dict[str, list[int]]:
    names = ("matched_s", "matched_t", "split_s", "split_s_group", "split_t", "split_t_group", "window_s", "window_t")
    return {name: getattr(alignment, name).tolist() for name in names}


def test_repeated_words_pair_in_order_sentencepiece_vs_byte_level():
    text = "a dog and a dog"
    # Qwen-like: "a" "Ġdog" "Ġand" "Ġa" "Ġdog" <|endoftext|>; byte-level spans include the leading space.
    student = view([(0, 1), (1, 5), (5, 9), (9, 11), (11, 15), (0, 0)])
    # T5-like: "▁a" "▁dog" "▁and" "▁a" "▁do" "g" </s>
    teacher = view([(0, 1), (1, 5), (5, 9), (9, 11), (11, 14), (14, 15), (0, 0)])
    result = listed(CrossTokenizerAligner(spec()).align(text, student, teacher))
    assert result["matched_s"] == [0, 1, 2, 3]
    assert result["matched_t"] == [0, 1, 2, 3]
    assert result["split_s"] == [4] and result["split_s_group"] == [0]
    assert result["split_t"] == [4, 5] and result["split_t_group"] == [0, 0]
    assert result["window_s"] == [] and result["window_t"] == []


def test_multibyte_character_and_digits_become_split_groups():
    text = "cafǽ 35mm"
    # Byte-level: "c" "a" "f", two byte tokens both spanning "ǽ", a lone "Ġ", digits one by one, "mm".
    student = view([(0, 1), (1, 2), (2, 3), (3, 4), (3, 4), (4, 5), (5, 6), (6, 7), (7, 9), (0, 0)])
    # SentencePiece: "▁caf" "<unk>"(ǽ) "▁35" "mm" </s>
    teacher = view([(0, 3), (3, 4), (4, 7), (7, 9), (0, 0)], unknown=(1,))
    result = listed(CrossTokenizerAligner(spec()).align(text, student, teacher))
    # Only "mm" has identical text: the bytes of ǽ and the unknown token never match by text.
    assert result["matched_s"] == [8] and result["matched_t"] == [3]
    # Groups are connected components of overlapping spans: c a f | ▁caf, both bytes of ǽ | <unk>,
    # and the lone space with 3 and 5 | ▁35.
    assert result["split_s"] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert result["split_s_group"] == [0, 0, 0, 1, 1, 2, 2, 2]
    assert result["split_t"] == [0, 1, 2]
    assert result["split_t_group"] == [0, 1, 2]


def test_lone_spaces_on_both_sides_pair_with_each_other():
    text = "in 3"
    student = view([(0, 2), (2, 3), (3, 4), (0, 0)])  # "in" "Ġ" "3"
    teacher = view([(0, 2), (2, 3), (3, 4), (0, 0)])  # "▁in" "▁" "3"
    result = listed(CrossTokenizerAligner(spec()).align(text, student, teacher))
    assert result["matched_s"] == [0, 1, 2] and result["matched_t"] == [0, 1, 2]


def test_wordpiece_offsets_point_to_original_case_and_accents():
    text = "Zürich close-up, naïve!"
    # Qwen-like: "Z" "ürich" "Ġclose" "-up" "," "Ġnaïve" "!" <|endoftext|>
    student = view([(0, 1), (1, 6), (6, 12), (12, 15), (15, 16), (16, 22), (22, 23), (0, 0)])
    # BERT: [CLS] "z" "##ur" "##ich" "close" "-" "up" "," "naive" [UNK] [SEP]; lower-cased, accents stripped,
    # but the offsets still point at "Z", "ür", "naïve" in the original text.
    teacher = view(
        [(0, 0), (0, 1), (1, 3), (3, 6), (7, 12), (12, 13), (13, 15), (15, 16), (17, 22), (22, 23), (0, 0)],
        unknown=(9,),
    )
    result = listed(CrossTokenizerAligner(spec()).align(text, student, teacher))
    assert result["matched_s"] == [0, 2, 4, 5]
    assert result["matched_t"] == [1, 4, 7, 8]
    # "ürich" vs "##ur" "##ich"; "-up" (crosses "-" and "up", merging them) vs "-" "up"; "!" vs [UNK].
    assert result["split_s"] == [1, 3, 6] and result["split_s_group"] == [0, 1, 2]
    assert result["split_t"] == [2, 3, 5, 6, 9] and result["split_t_group"] == [0, 0, 1, 1, 2]


def test_repeated_token_inside_one_word_pairs_by_position():
    text = "bonbon"
    student = view([(0, 3), (3, 6)])  # "bon" "bon"
    teacher = view([(0, 1), (1, 3), (3, 6)])  # "b" "on" "bon"
    result = listed(CrossTokenizerAligner(spec()).align(text, student, teacher))
    assert result["matched_s"] == [1] and result["matched_t"] == [2]
    assert result["split_s"] == [0] and result["split_t"] == [0, 1]


def test_identical_text_over_other_characters_of_a_word_is_no_pair():
    """'a' + 'ba' against 'ab' + 'a': the student's first a was matched with the teacher's last."""
    result = listed(CrossTokenizerAligner(spec()).align("aba", view([(0, 1), (1, 3)]), view([(0, 2), (2, 3)])))
    assert result["matched_s"] == [] and result["matched_t"] == []


def test_word_cut_by_truncation_yields_no_pairs():
    text = "a painting of a dog"
    student = view([(0, 1), (1, 7), (7, 10), (10, 13), (13, 15), (15, 19), (0, 0)])
    teacher = view([(0, 1), (1, 7), (0, 0)])  # "▁a" "▁paint" </s>: cut inside "painting"
    result = listed(CrossTokenizerAligner(spec()).align(text, student, teacher))
    # "paint" has identical text on both sides, but its word is incomplete on the teacher side.
    assert result["matched_s"] == [0] and result["matched_t"] == [0]
    assert result["split_s"] == [] and result["split_t"] == []
    assert result["window_s"] == []


def test_empty_text_and_no_tokens_give_empty_alignment():
    aligner = CrossTokenizerAligner(spec())
    empty = aligner.align("", view([(0, 0)]), view([]))
    assert all(len(values) == 0 for values in listed(empty).values())
    assert empty.coverage(0) == {"matched": 0.0, "split": 0.0, "window": 0.0, "any": 0.0, "sequence": 0.0}
    only_specials = aligner.align("dog", view([(0, 0)]), view([(0, 3)]))
    assert all(len(values) == 0 for values in listed(only_specials).values())


def test_window_pairs_identical_text_nearby_when_words_do_not_line_up():
    text = "dog dog"
    student = view([(0, 3), (4, 5), (5, 7)])  # "dog" "Ġd" "og"
    teacher = view([(0, 2), (4, 7)])  # "do" (the "g" dropped by the tokenizer), "dog"
    aligner = CrossTokenizerAligner(spec())
    result = listed(aligner.align(text, student, teacher))
    # The first word covers different characters on each side, so no split group; the window finds "dog".
    assert result["matched_s"] == []
    assert result["split_s"] == [1, 2] and result["split_t"] == [1]
    assert result["window_s"] == [0] and result["window_t"] == [1]
    no_reach = CrossTokenizerAligner(spec(word_window=0)).align(text, student, teacher)
    assert no_reach.window_s.tolist() == []


def test_lowercase_compares_case_insensitively():
    text = "Dog dog"
    student = view([(0, 3), (4, 5), (5, 7)])
    teacher = view([(0, 2), (4, 7)])
    assert CrossTokenizerAligner(spec()).align(text, student, teacher).window_s.tolist() == []
    lowered = CrossTokenizerAligner(spec(lowercase=True)).align(text, student, teacher)
    assert lowered.window_s.tolist() == [0] and lowered.window_t.tolist() == [1]


def test_only_listed_tiers_are_produced():
    text = "a dog and a dog"
    student = view([(0, 1), (1, 5), (5, 9), (9, 11), (11, 15)])
    teacher = view([(0, 1), (1, 5), (5, 9), (9, 11), (11, 14), (14, 15)])
    split_only = CrossTokenizerAligner(spec(tiers=["split"])).align(text, student, teacher)
    assert split_only.matched_s.tolist() == []
    assert split_only.split_s.tolist() == [0, 1, 2, 3, 4]
    assert split_only.split_s_group.tolist() == [0, 1, 2, 3, 4]
    assert split_only.coverage(5) == {"matched": 0.0, "split": 1.0, "window": 0.0, "any": 1.0}
    matched_only = CrossTokenizerAligner(spec(tiers=["matched", "sequence"])).align(text, student, teacher)
    assert matched_only.matched_s.tolist() == [0, 1, 2, 3]
    assert matched_only.split_s.tolist() == []
    assert matched_only.coverage(5) == {"matched": 0.8, "split": 0.0, "window": 0.0, "any": 0.8, "sequence": 1.0}


@pytest.fixture(scope="module")
def tiny_tokenizers():
    return {name: AutoTokenizer.from_pretrained(path) for name, path in (("qwen", QWEN_DIR), ("t5", T5_DIR))}


def test_real_tiny_tokenizers_align_a_prompt(tiny_tokenizers):
    text = "A café in Zürich, 35mm close-up of a dog and a dog"
    student = token_view(tiny_tokenizers["qwen"], text, 64)
    teacher = token_view(tiny_tokenizers["t5"], text, 64)
    alignment = CrossTokenizerAligner(spec()).align(text, student, teacher)
    assert alignment.coverage(student.n_real)["any"] == 1.0
    assert student.special.tolist()[-1] and teacher.special.tolist()[-1]
    for s, t in zip(alignment.matched_s.tolist(), alignment.matched_t.tolist(), strict=True):
        assert text[slice(*student.offsets[s])].strip() == text[slice(*teacher.offsets[t])].strip()


def test_truncation_by_max_length_never_pairs_missing_tokens(tiny_tokenizers):
    text = "a treehouse resting in a classroom, cinematic still, foggy, high angle, shot on Kodak Portra 400"
    aligner = CrossTokenizerAligner(spec())
    for max_length in range(1, 30):
        student = token_view(tiny_tokenizers["qwen"], text, 40)
        teacher = token_view(tiny_tokenizers["t5"], text, max_length)
        assert len(teacher) <= max_length
        alignment = aligner.align(text, student, teacher)
        teacher_end = max(
            (end for (_, end), special in zip(teacher.offsets.tolist(), teacher.special, strict=True) if not special),
            default=0,
        )
        for t in np.concatenate([alignment.matched_t, alignment.split_t, alignment.window_t]).tolist():
            assert not teacher.special[t] and teacher.offsets[t, 1] <= teacher_end
        for s in np.concatenate([alignment.matched_s, alignment.split_s]).tolist():
            assert student.offsets[s, 1] <= teacher_end


def test_the_sequence_tier_averages_the_same_words_on_both_sides_when_one_is_cut(tiny_tokenizers):
    """It averaged each side's every token: a student cut at 8 tokens against the whole sentence, ends included."""
    text = "a red fox jumping over a wooden fence in the snow, golden hour, highly detailed"
    aligner = CrossTokenizerAligner(spec())
    for student_length in (6, 8, 12, 64):
        student = token_view(tiny_tokenizers["qwen"], text, student_length)
        teacher = token_view(tiny_tokenizers["t5"], text, 64)
        alignment = aligner.align(text, student, teacher)
        s_end = max(int(student.offsets[s, 1]) for s in alignment.sequence_s.tolist())
        t_end = max(int(teacher.offsets[t, 1]) for t in alignment.sequence_t.tolist())
        assert text[:s_end].strip() == text[:t_end].strip(), student_length  # the same words
        assert not student.special[alignment.sequence_s].any() and not teacher.special[alignment.sequence_t].any()
        assert 0 < alignment.coverage(student.n_real)["sequence"] <= 1.0
        assert t_end < len(text) - 10 or student_length == 64, "the teacher's tail past the student's cut is left out"


def test_alignment_is_deterministic(tiny_tokenizers):
    text = "A poster of a red fox, 85mm f/1.4, naïve art, 4k"
    student = token_view(tiny_tokenizers["qwen"], text, 64)
    teacher = token_view(tiny_tokenizers["t5"], text, 64)
    first = listed(CrossTokenizerAligner(spec()).align(text, student, teacher))
    second = listed(CrossTokenizerAligner(spec()).align(text, student, teacher))
    assert first == second

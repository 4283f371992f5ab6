"""The vocabulary map pairs tokens that read the same under two tokenization schemes, and the divergences across
two vocabularies compare whole distributions over those tokens plus one bucket for the rest."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from components.losses.cross_vocab import CrossVocabLoss
from components.losses.vocab_map import VocabMap, build_vocab_map, mapped_log_probs, token_texts
from schemas.stages import ForwardKLLoss, JSDLoss, ULDLoss

TOKENIZERS = Path(__file__).resolve().parents[3] / "data" / "tokenizers"


@pytest.fixture(scope="module")
def tokenizers():
    return AutoTokenizer.from_pretrained(TOKENIZERS / "tiny_qwen"), AutoTokenizer.from_pretrained(
        TOKENIZERS / "tiny_t5"
    )


def test_sentencepiece_and_byte_level_tokens_of_the_same_text_are_paired(tokenizers) -> None:
    qwen, t5 = tokenizers
    vocab_map = build_vocab_map(qwen, t5)
    pairs = dict(zip(vocab_map.teacher_ids.tolist(), vocab_map.student_ids.tolist(), strict=True))
    for word in ["▁golden", "▁blue", ","]:
        t5_id = t5.convert_tokens_to_ids(word)
        assert t5_id != t5.unk_token_id
        qwen_word = word.replace("▁", "Ġ")
        assert pairs[t5_id] == qwen.convert_tokens_to_ids(qwen_word), word
    # a word start and the same letters inside a word are different tokens
    assert " blue" in token_texts(t5) and token_texts(t5)[" blue"] != token_texts(t5).get("blue")
    assert len(set(pairs.values())) == len(pairs)  # one-to-one
    specials = set(qwen.all_special_ids) | set(t5.all_special_ids)
    assert not specials & (set(pairs) | set(pairs.values()))
    assert vocab_map.summary().startswith(f"{len(pairs)} tokens shared: ")


def test_byte_pieces_that_are_not_whole_characters_are_left_out(tokenizers) -> None:
    qwen, _ = tokenizers
    texts = token_texts(qwen)
    assert all("\ufffd" not in text for text in texts)
    assert len(texts) < len(qwen) - 64  # the byte-level alphabet's lone high bytes decode to nothing whole


def test_mapped_rows_are_whole_distributions_even_when_every_id_is_shared() -> None:
    log_probs = F.log_softmax(torch.randn(3, 6, generator=torch.Generator().manual_seed(0)), -1)
    some = mapped_log_probs(log_probs, torch.tensor([4, 1]))
    assert some.shape == (3, 3)
    assert torch.allclose(some.logsumexp(-1), torch.zeros(3), atol=1e-6)
    assert torch.allclose(some[:, :2], log_probs[:, [4, 1]])
    every = mapped_log_probs(log_probs, torch.arange(6))
    assert torch.isfinite(every).all() and torch.allclose(every[:, :6].logsumexp(-1), torch.zeros(3), atol=1e-6)


def _pair_loss(loss, vocab_map: VocabMap, student: torch.Tensor, teacher: torch.Tensor) -> float:
    cross = CrossVocabLoss([loss], (vocab_map.student_size, vocab_map.teacher_size), vocab_map)
    rows = torch.arange(student.shape[0])
    sums, counts = cross.sums_and_counts(student, teacher, (rows, rows), torch.zeros(len(rows), dtype=torch.long))
    return float(cross.total(sums, counts))


def test_mapped_forward_kl_is_the_kl_over_shared_tokens_and_the_rest_bucket() -> None:
    vocab_map = VocabMap(torch.tensor([0, 2]), torch.tensor([3, 1]), student_size=4, teacher_size=5)
    g = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(2, 4, generator=g), torch.randn(2, 5, generator=g)
    s, t = F.softmax(student / 2, -1), F.softmax(teacher / 2, -1)
    s3 = torch.stack([s[:, 0], s[:, 2], s[:, 1] + s[:, 3]], -1)
    t3 = torch.stack([t[:, 3], t[:, 1], t[:, 0] + t[:, 2] + t[:, 4]], -1)
    expected = (t3 * (t3.log() - s3.log())).sum(-1).mean() * 4
    loss = ForwardKLLoss(type="forward_kl", temperature=2.0)
    assert _pair_loss(loss, vocab_map, student, teacher) == pytest.approx(expected.item(), rel=1e-5)


def test_a_student_that_matches_the_teacher_on_shared_tokens_and_the_rest_has_no_divergence() -> None:
    vocab_map = VocabMap(torch.tensor([0, 2]), torch.tensor([3, 1]), student_size=4, teacher_size=5)
    # the same shared probabilities, the rest spread differently over the unshared ids
    teacher = torch.tensor([[0.1, 0.3, 0.1, 0.4, 0.1]]).log()
    student = torch.tensor([[0.4, 0.05, 0.3, 0.25]]).log()
    for loss in (ForwardKLLoss(type="forward_kl"), JSDLoss(type="jsd")):
        assert _pair_loss(loss, vocab_map, student, teacher) == pytest.approx(0.0, abs=1e-6)
    assert _pair_loss(ULDLoss(type="uld"), vocab_map, student, teacher) > 0.1  # ULD sees the unshared ids too


def test_divergences_across_vocabularies_need_the_map() -> None:
    with pytest.raises(AssertionError, match="compare the ids both share"):
        CrossVocabLoss([JSDLoss(type="jsd")], (4, 5))


def _byte_fallback_tokenizer():
    """A SentencePiece-style BPE with byte fallback (Llama-2, TinyLlama, Mistral): `<0x00>`..`<0xFF>` come first,
    and `<0x2E>` decodes as "." just as the real `.` piece does."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2} | {f"<0x{b:02X}>": 3 + b for b in range(256)}
    for piece in ["▁", "a", "h", "e", "t", ".", "▁t", "he", "▁the", "▁a"]:
        vocab[piece] = len(vocab)
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("▁", "a")]
    model = models.BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True)
    backend = Tokenizer(model)
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def test_byte_fallback_pieces_stand_only_for_text_no_real_piece_writes() -> None:
    tokenizer = _byte_fallback_tokenizer()
    texts = token_texts(tokenizer)
    written = tokenizer.encode("a.", add_special_tokens=False)[-1]
    assert texts["."] == written == tokenizer.convert_tokens_to_ids(".")  # not <0x2E>, which reads the same
    assert texts[" the"] == tokenizer.convert_tokens_to_ids("▁the")
    assert texts["\n"] == tokenizer.convert_tokens_to_ids("<0x0A>")  # no real piece writes a newline

"""Builds the tiny tokenizers the repo ships, so tests and CPU demos never need the hub.

Three styles stand in for the real ones: T5 (SentencePiece Unigram, ``▁``), Qwen (byte-level BPE, ``Ġ``) and BERT
(WordPiece, ``##``). All are trained on ``data/prompts/train.txt`` in file order with parallelism off, so a rebuild
gives byte-identical files: ``python -m components.tokenizers.build_tiny``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_PROMPTS = Path("data/prompts/train.txt")
MODEL_MAX_LENGTH = 512
T5_VOCAB_SIZE = 2000
T5_SPECIALS = ("<pad>", "</s>", "<unk>")
WORDPIECE_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
# After Metaspace: runs of letters, of digits, or of other symbols, each optionally led by "▁".
SENTENCEPIECE_CLASS_PATTERN = r"▁?\p{L}+|▁?\p{N}+|▁?[^\p{L}\p{N}▁]+|▁"

# The pre-tokenizer regex of Qwen2/Qwen3: digits one by one, punctuation may lead a word ("-up", "(dog").
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


@dataclass(frozen=True)
class TinyTokenizerSpec:
    """Where one tiny tokenizer goes, how it is trained, and the special tokens transformers must know about."""

    directory: Path
    build: Callable[[list[str]], Tokenizer]
    special_tokens: dict[str, str]


def _t5_normalizer() -> normalizers.Normalizer:
    return normalizers.Sequence([normalizers.NFKC(), normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")])


def _t5_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    # As in T5's converted tokenizer.json: a space becomes "▁" in place, so a lone "▁" token's offsets are that space.
    return pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")


def _unigram_seed_pieces(lines: list[str], seed_size: int) -> list[str]:
    """Candidate pieces from a BPE run, in id order.

    HF's UnigramTrainer seeds only substrings shared by two distinct words, so on a corpus this small frequent whole
    words ("▁with") never enter its vocabulary. Pieces never mix letters, digits and punctuation, like
    SentencePiece's split_by_unicode_script / split_by_number.
    """
    seed = Tokenizer(models.BPE())
    seed.normalizer = _t5_normalizer()
    seed.pre_tokenizer = pre_tokenizers.Sequence(
        [_t5_pre_tokenizer(), pre_tokenizers.Split(Regex(SENTENCEPIECE_CLASS_PATTERN), behavior="isolated")]
    )
    seed.train_from_iterator(lines, trainer=trainers.BpeTrainer(vocab_size=seed_size, show_progress=False))
    return [piece for piece, _ in sorted(seed.get_vocab().items(), key=lambda item: item[1])]


def _viterbi_em_scores(pieces: list[str], words: list[tuple[str, int]], rounds: int) -> dict[str, float]:
    """Unigram log-probabilities by hard EM: segment every word by Viterbi, re-estimate from the piece counts."""
    scores = dict.fromkeys(pieces, 0.0)
    for _ in range(rounds):
        model = models.Unigram(list(scores.items()), unk_id=None, byte_fallback=False)
        counts: Counter[str] = Counter()
        for word, frequency in words:
            for token in model.tokenize(word):
                counts[token.value] += frequency
        total = sum(counts.values())
        # Unused multi-character pieces drop out; single characters stay so nothing becomes unknown.
        scores = {
            piece: math.log(max(counts[piece], 0.5) / total) for piece in scores if counts[piece] > 0 or len(piece) == 1
        }
    return scores


def build_t5_style(lines: list[str]) -> Tokenizer:
    """SentencePiece-like Unigram with Metaspace; ``</s>`` appended to every sequence as T5 does."""
    normalizer, pre_tokenizer = _t5_normalizer(), _t5_pre_tokenizer()
    word_counts: Counter[str] = Counter()
    for line in lines:
        word_counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(line)))
    scores = _viterbi_em_scores(_unigram_seed_pieces(lines, seed_size=3000), sorted(word_counts.items()), rounds=4)
    ranked = sorted(scores.items(), key=lambda item: (-item[1], item[0]))
    characters = [item for item in ranked if len(item[0]) == 1]
    longer = [item for item in ranked if len(item[0]) > 1][: T5_VOCAB_SIZE - len(T5_SPECIALS) - len(characters)]
    vocab = [(token, 0.0) for token in T5_SPECIALS] + sorted(characters + longer, key=lambda i: (-i[1], i[0]))
    tokenizer = Tokenizer(models.Unigram(vocab, unk_id=T5_SPECIALS.index("<unk>"), byte_fallback=False))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.add_special_tokens(list(T5_SPECIALS))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", tokenizer.token_to_id("</s>"))]
    )
    return tokenizer


def build_qwen_style(lines: list[str]) -> Tokenizer:
    """Byte-level BPE with Qwen's split regex; ``<|endoftext|>`` appended as Qwen3-Embedding does."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1999,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
    # Like Qwen, the special token comes after the learned vocabulary.
    tokenizer.add_special_tokens(["<|endoftext|>"])
    eos_id = tokenizer.token_to_id("<|endoftext|>")
    tokenizer.post_processor = processors.Sequence(
        [
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(
                single="$A <|endoftext|>",
                pair="$A <|endoftext|> $B <|endoftext|>",
                special_tokens=[("<|endoftext|>", eos_id)],
            ),
        ]
    )
    return tokenizer


def build_bert_style(lines: list[str]) -> Tokenizer:
    """Lower-casing, accent-stripping WordPiece with ``[CLS] ... [SEP]``; offsets still point into the raw text.

    HF's WordPieceTrainer numbers ``##`` symbols in hash-map order, so its merge ties (and files) change from run to
    run. The pieces come from a plain BPE run instead (deterministic), each kept as word start and as ``##`` piece.
    """
    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    seed = Tokenizer(models.BPE())
    seed.normalizer, seed.pre_tokenizer = normalizer, pre_tokenizer
    seed.train_from_iterator(lines, trainer=trainers.BpeTrainer(vocab_size=400, show_progress=False))
    pieces = [piece for piece, _ in sorted(seed.get_vocab().items(), key=lambda item: item[1])]
    ordered = list(WORDPIECE_SPECIALS) + [form for piece in pieces for form in (piece, "##" + piece)]
    tokenizer = Tokenizer(models.WordPiece({piece: index for index, piece in enumerate(ordered)}, unk_token="[UNK]"))
    tokenizer.normalizer, tokenizer.pre_tokenizer = normalizer, pre_tokenizer
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.add_special_tokens(list(WORDPIECE_SPECIALS))
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tokenizer


TINY_TOKENIZERS: tuple[TinyTokenizerSpec, ...] = (
    TinyTokenizerSpec(
        Path("data/tokenizers/tiny_t5"),
        build_t5_style,
        {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"},
    ),
    TinyTokenizerSpec(
        Path("data/tokenizers/tiny_qwen"),
        build_qwen_style,
        {"pad_token": "<|endoftext|>", "eos_token": "<|endoftext|>"},
    ),
    TinyTokenizerSpec(
        Path("tests/assets/tokenizers/tiny_wordpiece"),
        build_bert_style,
        {
            "pad_token": "[PAD]",
            "unk_token": "[UNK]",
            "cls_token": "[CLS]",
            "sep_token": "[SEP]",
            "mask_token": "[MASK]",
        },
    ),
)


@contextmanager
def _single_threaded_training() -> Iterator[None]:
    """The Unigram EM sums floats in parallel; a fixed order is what makes rebuilds byte-identical."""
    previous = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        if previous is None:
            del os.environ["TOKENIZERS_PARALLELISM"]
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = previous


def _write_json(path: Path, content: dict[str, object]) -> None:
    path.write_text(json.dumps(content, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def save_tiny_tokenizer(tokenizer: Tokenizer, directory: Path, special_tokens: dict[str, str]) -> None:
    """Writes what ``AutoTokenizer.from_pretrained(directory)`` needs; no transformers call, so no version stamps."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"), pretty=True)
    config: dict[str, object] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": MODEL_MAX_LENGTH,
        "padding_side": "right",
        "clean_up_tokenization_spaces": False,
        **special_tokens,
    }
    _write_json(directory / "tokenizer_config.json", config)
    _write_json(directory / "special_tokens_map.json", dict(special_tokens))


def read_training_lines(prompts_file: Path) -> list[str]:
    return [line for line in prompts_file.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_all(out_root: Path, prompts_file: Path) -> list[Path]:
    """Trains and saves every tiny tokenizer under ``out_root``; returns their directories."""
    lines = read_training_lines(prompts_file)
    written = []
    with _single_threaded_training():
        for spec in TINY_TOKENIZERS:
            directory = out_root / spec.directory
            save_tiny_tokenizer(spec.build(lines), directory, spec.special_tokens)
            written.append(directory)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Rebuild the tiny tokenizers shipped with the repo.")
    parser.add_argument("--out-root", type=Path, default=REPO_ROOT, help="Directory the repo-relative paths go under.")
    parser.add_argument("--prompts", type=Path, default=REPO_ROOT / TRAIN_PROMPTS, help="Training text, one per line.")
    args = parser.parse_args(argv)
    for directory in build_all(args.out_root, args.prompts):
        print(directory)


if __name__ == "__main__":
    main()

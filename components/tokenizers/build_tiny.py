"""Builds the tiny tokenizers the repo ships, so tests and CPU demos never need the hub.

Three styles stand in for the real ones: T5 (SentencePiece Unigram, ``▁``), Qwen (byte-level BPE, ``Ġ``) and BERT
(WordPiece, ``##``). All are trained on ``data/prompts/train.txt`` in file order with parallelism off, so a rebuild
gives byte-identical files: ``python -m components.tokenizers.build_tiny``.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

REPO_ROOT = Path(__file__).resolve().parents[2]
TRAIN_PROMPTS = Path("data/prompts/train.txt")
MODEL_MAX_LENGTH = 512

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


def build_t5_style(lines: list[str]) -> Tokenizer:
    """SentencePiece-like Unigram; ``</s>`` appended to every sequence as T5 does."""
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.normalizer = normalizers.Sequence(
        [normalizers.NFKC(), normalizers.Strip(), normalizers.Replace(Regex(" {2,}"), " ")]
    )
    # As in T5's converted tokenizer.json: a space becomes "▁" in place, so a lone "▁" token's offsets are that space.
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tokenizer.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    trainer = trainers.UnigramTrainer(
        vocab_size=2000,
        special_tokens=["<pad>", "</s>", "<unk>"],
        unk_token="<unk>",
        max_piece_length=16,
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
    eos_id = tokenizer.token_to_id("</s>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", eos_id)]
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
    """Lower-casing, accent-stripping WordPiece with ``[CLS] ... [SEP]``; offsets still point into the raw text."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    trainer = trainers.WordPieceTrainer(
        vocab_size=800,
        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"],
        continuing_subword_prefix="##",
        show_progress=False,
    )
    tokenizer.train_from_iterator(lines, trainer=trainer, length=len(lines))
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

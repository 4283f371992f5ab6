"""The prompt-length distribution the benchmark draws batches from, and the generator that made the shipped file.

Uniform 512-token batches overstate the cost of image prompts by several times: real prompts are mostly short
tag lists and one- or two-sentence descriptions, with a tail of long LLM-written captions. The shipped file
`data/bench/prompt_lengths.txt` holds 2000 lengths (teacher tokens, EOS included) from a three-part mixture of
log-normals, redrawn above 512 so the tail ends at the T5 context instead of piling up on it:

    45%  tag-style prompts      median  45 tokens, sigma 0.45
    40%  descriptive sentences  median 100 tokens, sigma 0.35
    15%  long captions          median 230 tokens, sigma 0.40

Regenerate it with `python -m recipe_runner.bench.lengths > data/bench/prompt_lengths.txt`; the test checks that
the file and the generator agree. Python's `random` (not numpy) keeps the stream identical across versions.
"""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path

from components.data.batches import bucketed_batches
from schemas.hardware import Hardware

REPO_DATA = Path(__file__).resolve().parents[2] / "data"
LENGTHS_FILE = REPO_DATA / "bench" / "prompt_lengths.txt"
COUNT = 2000
SEED = 20250131
MAX_TOKENS = 512
MIN_TOKENS = 4


def batches_over_epochs(lengths: list[int], hardware: Hardware, at_least: int) -> list[list[int]]:
    """The trainer's bucketed batches of these lengths, epoch after epoch as a long run sees them, until there are
    at least `at_least` (whole epochs: the list may be longer)."""
    batches: list[list[int]] = []
    epoch = 0
    while len(batches) < at_least:
        batches += bucketed_batches(
            lengths,
            hardware.batch_size,
            shuffle=True,
            seed=hardware.seed,
            epoch=epoch,
            batch_tokens=hardware.batch_tokens,
        )
        epoch += 1
    return batches


# (weight, median tokens, sigma of log length)
MIXTURE: tuple[tuple[float, float, float], ...] = ((0.45, 45.0, 0.45), (0.40, 100.0, 0.35), (0.15, 230.0, 0.40))


def _component(draw: float) -> tuple[float, float]:
    """(median, sigma) of the mixture part that a uniform draw in [0, 1) falls into."""
    cumulative = 0.0
    for weight, median, sigma in MIXTURE:
        cumulative += weight
        if draw < cumulative:
            return median, sigma
    return MIXTURE[-1][1], MIXTURE[-1][2]


def generate_lengths(count: int = COUNT, seed: int = SEED) -> list[int]:
    """Deterministic draw from MIXTURE; a length outside [MIN_TOKENS, MAX_TOKENS] is drawn again."""
    rng = random.Random(seed)
    lengths: list[int] = []
    while len(lengths) < count:
        median, sigma = _component(rng.random())
        length = round(rng.lognormvariate(math.log(median), sigma))
        if MIN_TOKENS <= length <= MAX_TOKENS:
            lengths.append(length)
    return lengths


def load_lengths(path: Path = LENGTHS_FILE) -> list[int]:
    """The shipped lengths; an installed copy without the data folder regenerates the same numbers."""
    if not path.is_file():
        return generate_lengths()
    lines = path.read_text(encoding="utf-8").splitlines()
    return [int(line) for line in lines if line.strip() and not line.startswith("#")]


def sample_lengths(lengths: list[int], count: int, seed: int, max_length: int) -> list[int]:
    """`count` lengths drawn without replacement while they last, truncated to a model's max_length."""
    rng = random.Random(seed)
    drawn: list[int] = []
    while len(drawn) < count:
        drawn += rng.sample(lengths, min(len(lengths), count - len(drawn)))
    return [min(length, max_length) for length in drawn]


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile (no interpolation), enough for reporting."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def _write(out) -> None:
    out.write("# Prompt lengths in T5 tokens (EOS included) typical of image prompts; one per line.\n")
    out.write("# Made by `python -m recipe_runner.bench.lengths` (see that module for the mixture).\n")
    for length in generate_lengths():
        out.write(f"{length}\n")


if __name__ == "__main__":
    _write(sys.stdout)

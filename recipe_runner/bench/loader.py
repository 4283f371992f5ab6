"""Whether the data loader can feed the GPU: the trainer's own loader over a teacher cache on disk.

Each item goes through what a training run does: both tokenizers, the aligner, the teacher's rows read from a
memory-mapped cache shard, then collation into a padded batch in `hardware.num_workers` worker processes, with
pinning and the copy to the device on a GPU. The cache is written for the bench into a temporary directory by
the cache's own writer, with random rows at the teacher's width and the cache's dtype, so its shards are the
format, size and layout a real one has. Set against the real tokens per second the training section consumed
(when it ran), this says whether training would wait on its data.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from pydantic import Field
from torch import nn

from components.alignment import token_views
from components.cache.reader import CachedTeacher
from components.cache.writer import prepare_split, write_split
from components.data.pipeline import Collator
from components.models import hidden_width, pad_id, resolve_config
from recipe_runner.bench.aligner import bench_prompts, bench_tokenizers, prompt_pairs
from recipe_runner.bench.lengths import batches_over_epochs
from recipe_runner.bench.spec import BenchSpec
from recipe_runner.bench.timing import now
from recipe_runner.trainer.batch_plan import batch_loader
from schemas import Recipe
from schemas.base import StrictModel
from schemas.models import TeacherCache


class LoaderResult(StrictModel):
    """The training loader over the bench's prompts (epochs end to end), timed after its first batch."""

    tokenizers: str = Field(description="Which tokenizers ran: the recipe's, or the shipped tiny ones and why.")
    prompts_file: str
    prompts: int = Field(description="Distinct prompts (and cache rows); `batches` may go over them more than once.")
    batches: int
    num_workers: int = Field(description="hardware.num_workers: processes making and collating items.")
    pinned: bool = Field(description="Batches pinned and copied to the GPU asynchronously (CUDA runs).")
    teacher_width: int
    cache_dtype: str | None = Field(description="teacher.cache.dtype; null without a cache (no rows are read).")
    first_batch_s: float = Field(description="Until the first batch arrived: workers starting, shards opening.")
    seconds: float = Field(description="The other batches, each copied to the device.")
    prompts_per_s: float
    real_student_tokens_per_s: float = Field(description="With these tokenizers (see `tokenizers`).")
    teacher_target_bytes_per_s: float = Field(description="Cached teacher rows delivered, padding included.")
    training_tokens_per_s: float | None = Field(
        description="Real student tokens per second the training section's timed steps consumed (null when it "
        "did not run)."
    )
    headroom: float | None = Field(
        description="real_student_tokens_per_s / training_tokens_per_s: below 1 the loader cannot keep up and "
        "training waits on data (raise hardware.num_workers); null without a training section. Counted in tokens, "
        "since the bench's prompts and the training section's lengths differ; per-prompt costs make short prompts "
        "the harder case for the loader."
    )


class _RandomRows(nn.Module):
    """A stand-in teacher whose hidden states are random: the cache bench needs the shape, not the values."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.width = width

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        hidden = torch.randn(*input_ids.shape, self.width)
        return type("Output", (), {"last_hidden_state": hidden})()


def _write_cache(
    directory: Path, cache: TeacherCache, teacher_ids: list[list[int]], width: int, chroma: bool, pad: int
) -> CachedTeacher:
    """A cache of random rows in `directory`, written as `recipe cache` writes one; returns it opened."""
    prepare_split(directory, {"bench": True}, "bench", len(teacher_ids), cache.shard_size)
    write_split(
        directory,
        teacher_ids,
        _RandomRows(width),
        shard_size=cache.shard_size,
        batch_tokens=16384,
        chroma_mask=chroma,
        dtype=cache.dtype,
        pad_id=pad,
        device=torch.device("cpu"),
    )
    return CachedTeacher(directory)


def run_loader(
    recipe: Recipe, original: Recipe, spec: BenchSpec, device: torch.device, training_tokens_per_s: float | None
) -> LoaderResult:
    """The loader's rate on the hardware profile, with `original`'s tokenizers and prompts and the teacher width
    of `recipe` (the benched one: shrunk under --small)."""
    hw = recipe.hardware
    student_tok, teacher_tok, names = bench_tokenizers(original)
    prompts, prompts_file = bench_prompts(original, spec.loader_prompts)
    width = hidden_width(resolve_config(recipe.teacher))
    teacher_ids = [view.ids for view in token_views(teacher_tok, prompts, recipe.teacher.max_length)]
    student_lengths = [len(view.ids) for view in token_views(student_tok, prompts, recipe.student.max_length)]
    order = batches_over_epochs(student_lengths, hw, spec.loader_batches)
    cached, chroma, pad = recipe.teacher_cache, recipe.teacher.chroma_mask, pad_id(teacher_tok)
    with tempfile.TemporaryDirectory(prefix="recipe-bench-loader-") as tmp:
        cache = None if cached is None else _write_cache(Path(tmp), cached, teacher_ids, width, chroma, pad)
        dataset = prompt_pairs(original, prompts, student_tok, teacher_tok, cache)
        collate = Collator(pad_id(student_tok), pad, chroma)
        started = now(device)
        batches = batch_loader(dataset, order, collate, hw, device)
        next(batches).to(device)
        first = now(device) - started
        tokens = target_bytes = prompts_seen = 0
        started = now(device)
        for batch in batches:
            batch = batch.to(device)
            tokens += batch.student_tokens
            prompts_seen += len(batch.indices)
            if batch.teacher_hidden is not None:  # none without a cache: the teacher runs in the step
                target_bytes += batch.teacher_hidden.numel() * batch.teacher_hidden.element_size()
        seconds = max(now(device) - started, 1e-9)
    token_rate = tokens / seconds
    return LoaderResult(
        tokenizers=names,
        prompts_file=prompts_file,
        prompts=len(prompts),
        batches=len(order),
        num_workers=hw.num_workers,
        pinned=device.type == "cuda",
        teacher_width=width,
        cache_dtype=None if cached is None else cached.dtype,
        first_batch_s=first,
        seconds=seconds,
        prompts_per_s=prompts_seen / seconds,
        real_student_tokens_per_s=token_rate,
        teacher_target_bytes_per_s=target_bytes / seconds,
        training_tokens_per_s=training_tokens_per_s,
        headroom=None if not training_tokens_per_s else token_rate / training_tokens_per_s,
    )

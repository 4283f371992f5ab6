"""Which prompts go together, in which order, for each stage and epoch and process: derived from the recipe and
the data alone, so that a resumed run finds the very batch it stopped at."""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Iterator

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from components.data.batches import bucketed_batches, shard_batches
from components.data.pipeline import Collator, DistillBatch, PromptPairs
from components.data.texts import TextBatch, TextCollator, TextSamples
from recipe_runner.trainer.checkpoint import Position
from recipe_runner.trainer.loader_workers import (
    LOADER_TIMEOUT_S,
    PREFETCH_FACTOR,
    more_workers_than_cores,
    require_worker_sockets,
    usable_cores,
)
from recipe_runner.trainer.parts import RunParts
from schemas import Recipe
from schemas.hardware import Hardware
from schemas.stages import Stage


def batch_loader(
    dataset: PromptPairs | TextSamples,
    order: list[list[int]],
    collate: Collator | TextCollator,
    hardware: Hardware,
    device: torch.device,
) -> Iterator:
    """`order`'s batches: items made and collated in `hardware.num_workers` processes, pinned for an asynchronous
    copy when the batches go to a GPU."""
    require_worker_sockets(hardware.num_workers)
    with warnings.catch_warnings():
        # torch warns of more workers than cores as the loader is made and again as each iterator is: BatchPlan
        # says it once, in our words
        warnings.filterwarnings("ignore", message="This DataLoader will create")
        loader = DataLoader(
            dataset,
            batch_sampler=order,
            collate_fn=collate,
            num_workers=hardware.num_workers,
            pin_memory=device.type == "cuda",
            timeout=LOADER_TIMEOUT_S if hardware.num_workers else 0,
            prefetch_factor=PREFETCH_FACTOR if hardware.num_workers else None,
            # Its own generator for the workers' base seed: drawn from torch's global one, it shifted the numbers
            # that stochastic rounding and dropout draw after a resume, which builds its loader at another point.
            generator=torch.Generator().manual_seed(hardware.seed),
        )
        return iter(loader)


class BatchPlan:
    """Batches of the train and eval prompts on this process's device, and the step counts they make."""

    def __init__(self, recipe: Recipe, parts: RunParts, accelerator: Accelerator) -> None:
        self.recipe, self.parts, self.accelerator = recipe, parts, accelerator
        self.lengths = parts.train.token_lengths()
        self.eval_order = self._eval_order()
        self.collate = parts.collate
        workers = recipe.hardware.num_workers
        crowded = more_workers_than_cores(workers, accelerator.num_processes, usable_cores())
        if crowded and accelerator.is_main_process:
            tqdm.write(crowded, file=sys.stderr)

    def _eval_order(self) -> list[list[int]]:
        """Eval batches in file order; under a token budget, length-sorted so that they keep to it too."""
        hw, held_out = self.recipe.hardware, self.parts.eval
        count = len(held_out) if held_out is not None else 0
        if hw.batch_tokens is None:
            return [list(range(i, min(i + hw.batch_size, count))) for i in range(0, count, hw.batch_size)]
        lengths = held_out.token_lengths() if held_out is not None else []
        return bucketed_batches(lengths, hw.batch_size, shuffle=False, seed=0, epoch=0, batch_tokens=hw.batch_tokens)

    def _load(self, dataset: PromptPairs | TextSamples, order: list[list[int]]) -> Iterator[DistillBatch | TextBatch]:
        for batch in batch_loader(dataset, order, self.collate, self.recipe.hardware, self.accelerator.device):
            yield batch.to(self.accelerator.device)

    def eval_batches(self) -> Iterator[DistillBatch | TextBatch]:
        """This process's share of the eval batches: every N-th one, so that uneven shares are covered too."""
        accelerator = self.accelerator
        assert self.parts.eval is not None
        return self._load(self.parts.eval, self.eval_order[accelerator.process_index :: accelerator.num_processes])

    def eval_rounds(self) -> int:
        """The longest process's share of the eval batches (the first process's): what all of them count through."""
        return len(self.eval_order[:: self.accelerator.num_processes])

    def epoch_order(self, stage_index: int, epoch: int) -> list[list[int]]:
        hw = self.recipe.hardware
        batches = bucketed_batches(
            self.lengths,
            hw.batch_size,
            shuffle=self.recipe.data.shuffle,
            seed=hw.seed + 1000 * stage_index,
            epoch=epoch,
            batch_tokens=hw.batch_tokens,
        )
        return shard_batches(batches, self.accelerator.process_index, self.accelerator.num_processes)

    def stream(self, stage_index: int, position: Position) -> Iterator[tuple[DistillBatch | TextBatch, int, int, int]]:
        """Batches forever, with the (epoch, next batch, batches in the epoch) position after each one, for exact
        resumption."""
        epoch, start = position.epoch, position.batch
        while True:
            order = self.epoch_order(stage_index, epoch)
            for offset, batch in enumerate(self._load(self.parts.train, order[start:]), start + 1):
                yield batch, epoch, offset, len(order)
            epoch, start = epoch + 1, 0

    def rescale(self, stage_index: int, stage: Stage, position: Position) -> None:
        """A run resumed with another batch_size or batch_tokens (say after running out of memory), or as another
        number of processes, has another number of batches per epoch and process: continue at the same fraction of
        the epoch rather than at the same batch. A stage counted in epochs also counts its steps anew (grad_accum
        may have changed too), so that it still ends after its epochs rather than after its old step count."""
        now = len(self.epoch_order(stage_index, position.epoch))
        notices = []
        if position.epoch_batches and now != position.epoch_batches:
            # Rounded down: at most a batch's worth of prompts is trained twice, and none is skipped.
            batch = min(now, position.batch * now // position.epoch_batches)
            notices.append(
                f"resuming with {now} batches per epoch and process instead of {position.epoch_batches} "
                f"(batching or process count changed): epoch {position.epoch} continues at batch {batch} "
                f"instead of {position.batch}"
            )
            position.batch, position.epoch_batches = batch, now
        if stage.epochs is not None:
            before = sum(len(self.epoch_order(stage_index, epoch)) for epoch in range(position.epoch))
            step = (before + position.batch) // self.recipe.hardware.grad_accum
            if step != position.stage_step:
                total = self.total_steps(stage_index, stage)
                notices.append(
                    f"the stage's steps are counted anew for this batching: its step {position.stage_step} is now "
                    f"step {step} of {total}"
                )
                position.stage_step = step
        elif position.stage_step > stage.steps:
            notices.append(
                f"stage {stage.name} had trained {position.stage_step} steps, more than its steps now "
                f"({stage.steps}): it ends here, without training more"
            )
        if notices and self.accelerator.is_main_process:
            for notice in notices:
                tqdm.write(notice, file=sys.stderr)

    def total_steps(self, stage_index: int, stage: Stage) -> int:
        if stage.steps is not None:
            return stage.steps
        # With batch_tokens the count of batches differs a little between epochs (each shuffles anew): add them up.
        whole, fraction = divmod(stage.epochs, 1)
        batches = sum(len(self.epoch_order(stage_index, epoch)) for epoch in range(int(whole)))
        if fraction:
            batches += fraction * len(self.epoch_order(stage_index, int(whole)))
        return max(1, math.ceil(batches / self.recipe.hardware.grad_accum))

"""The staged training loop: accelerate for devices and precision, safe checkpoints, clean interrupts."""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from components.attention_backends import shape_stable_attention
from components.data.pipeline import DistillBatch
from components.data.prompts import prompts_digest
from components.data.texts import TextBatch
from components.models.compilation import compile_for_varied_lengths, compile_wanted
from recipe_runner.next_commands import FROM_PYTHON, NextCommands
from recipe_runner.processes import first_process, launched_processes
from recipe_runner.teacher_cache import hold_cache_for_reading
from recipe_runner.trainer import resume
from recipe_runner.trainer.batch_plan import BatchPlan
from recipe_runner.trainer.checkpoint import (
    Position,
    checkpoint_name,
    load_checkpoint,
    read_position,
    read_record,
    read_state,
    step_checkpoints,
)
from recipe_runner.trainer.checkpoint_writer import CheckpointWriter
from recipe_runner.trainer.checksums import unchecked_note, verify_checksums
from recipe_runner.trainer.consensus import Consensus, StoppableEvaluation, StopRelay
from recipe_runner.trainer.data_failures import DataFailure, next_batch, worker_death
from recipe_runner.trainer.deferred_signals import child_signals_deferred
from recipe_runner.trainer.evaluation import empty_tier_warnings
from recipe_runner.trainer.final_export import export_at_end
from recipe_runner.trainer.launch import build_accelerator, check_launch, launch_in_words
from recipe_runner.trainer.objectives import Objective, objective_for
from recipe_runner.trainer.on_policy import SamplingDiverged
from recipe_runner.trainer.optim import build_optimizer
from recipe_runner.trainer.packing import choose_packing
from recipe_runner.trainer.parts import RunParts, build_parts, live_teacher_note, split_prompts
from recipe_runner.trainer.preflight import check_before_loading
from recipe_runner.trainer.random_streams import own_stream
from recipe_runner.trainer.resume import run_record
from recipe_runner.trainer.run_dir import DirectoryLock, choose_start
from recipe_runner.trainer.run_log import LossWindow, MetricsLog, metrics_line, write_run_info
from recipe_runner.trainer.save_clock import SaveClock
from recipe_runner.trainer.stage_setup import enter_stage, leave_stage, parameters_by_part
from recipe_runner.trainer.stops import (
    CheckpointWriteError,
    HangupTolerantStream,
    StopFlag,
    TrainingInterrupted,
    damaged_checkpoint,
    data_failed,
    diverged,
    last_checkpoint,
    lost_a_process,
    lost_output_stops,
    out_of_memory,
    write_failed,
)
from schemas import Recipe
from schemas.stages import Stage


@dataclass
class RunSummary:
    global_step: int
    metrics: dict[str, float]
    export_dir: Path | None


class Trainer:
    """Runs every stage of a recipe in order; resumable from any complete checkpoint. `commands` rebuilds the
    command lines its messages offer (a resume with this run's --set values, say)."""

    def __init__(
        self, recipe: Recipe, resume: bool = False, progress: bool = True, commands: NextCommands = FROM_PYTHON
    ) -> None:
        self.recipe, self.commands = recipe, commands
        self.out = Path(recipe.output.dir)
        self.checkpoints = self.out / "checkpoints"
        self.lock = DirectoryLock(self.out).acquire()
        self.cache_lock: DirectoryLock | None = None
        try:
            self._prepare(resume, progress)
        except BaseException:
            self._release_locks()  # a run that never started must not keep the directories
            raise

    def _release_locks(self) -> None:
        self.lock.release()
        if self.cache_lock is not None:
            self.cache_lock.release()

    def _prepare(self, resume: bool, progress: bool) -> None:
        recipe = self.recipe
        self.resume_from = choose_start(self.out, resume, first_process(), recipe.recipe, self.commands.resume)
        train, held_out = split_prompts(recipe)
        self.prompts_sha = (prompts_digest(train), prompts_digest(held_out) if held_out else None)
        self.resume_report = self._check_resume() if self.resume_from else None
        self.progress = progress
        self.accelerator = build_accelerator(recipe)
        check_launch(recipe, self.accelerator)
        self.relay = StopRelay(self.accelerator)
        # (`resume` is a flag in here, not the module)
        record = run_record(recipe, *self.prompts_sha, processes=self.accelerator.num_processes)
        self.writer = CheckpointWriter(
            self.accelerator, self.checkpoints, recipe.output.keep_last, record, self.commands.resume
        )
        check_before_loading(recipe, self.out, writes=self.accelerator.is_main_process)
        # `recipe cache` must not replace shards under a run reading them; with the teacher live it may write.
        self.cache_lock = hold_cache_for_reading(recipe)
        self.parts: RunParts = build_parts(recipe, self.accelerator.device, progress, self.commands)
        own_stream(self.accelerator.process_index)  # the weights were drawn alike: from here each its own
        packing_note = choose_packing(self.parts.model, recipe, self.accelerator.device, self.parts.teacher)
        if packing_note and self.accelerator.is_main_process:
            tqdm.write(packing_note, file=sys.stderr)
        if recipe.teacher_cache is not None and self.parts.teacher is not None and self.accelerator.is_main_process:
            tqdm.write(live_teacher_note(recipe, self.commands), file=sys.stderr)
        if self.cache_lock is not None and not self.parts.reads_cache:
            self.cache_lock.release()
        # A resume that found no checkpoint starts at step 0: every row logged before is of steps trained again.
        at = read_position(self.resume_from) if self.resume_from else None
        resume_step = at.global_step if at else (-1 if resume else None)
        resume_stage = recipe.stages[min(at.stage, len(recipe.stages) - 1)].name if at else None
        self.metrics = MetricsLog(self.out, self.accelerator.is_main_process, resume_step, resume_stage)
        self.batches = BatchPlan(recipe, self.parts, self.accelerator)

    def _check_resume(self) -> resume.ResumeReport | None:
        """Stop before anything is loaded or written when the checkpoint cannot continue under this recipe;
        returns the recipe values that changed since (None: a checkpoint older than run records)."""
        assert self.resume_from is not None
        try:
            position, record = read_position(self.resume_from), read_record(self.resume_from)
            read_state(self.resume_from)
            # before minutes of model loading are spent on damaged weights
            if not verify_checksums(self.resume_from) and first_process():
                print(unchecked_note(self.resume_from), file=sys.stderr)
        except (OSError, ValueError, TypeError) as exc:
            raise damaged_checkpoint(self.resume_from, exc, self.commands.resume) from None
        if record is None:
            return None
        train_sha, eval_sha = self.prompts_sha
        report = resume.compare(record, self.recipe, train_sha, position.stage, eval_sha, launched_processes())
        resume.check_resumable(self.resume_from, report, self.commands.launcher)
        return report

    def _evaluate(self, objective: Objective, stop: StopFlag) -> dict[str, float] | None:
        """The eval metrics ({} without eval data); None when a stop reached any process meanwhile: every process
        leaves the evaluation at once for its checkpoint (a long one would outlast a scheduler's grace period) and
        logs no partial result."""
        if self.parts.eval is None:
            return {}
        accelerator = self.accelerator
        evaluation = StoppableEvaluation(Consensus(accelerator), stop, self.batches.eval_rounds())
        model = accelerator.unwrap_model(self.prepared)
        model.eval()
        with accelerator.autocast():  # each process evaluates its share and the sums are added up
            metrics = objective.evaluate(
                model,
                evaluation.batches(self.batches.eval_batches()),
                total=lambda sums: accelerator.reduce(sums.to(accelerator.device), "sum"),
            )
        model.train()
        return None if evaluation.stopped else metrics

    def _save(self, position: Position, name: str | None = None) -> bool:
        model = self.accelerator.unwrap_model(self.prepared)
        return self.writer.save(model, self.optimizer, self.scheduler, position, name)

    def run(self) -> RunSummary:
        if self.accelerator.is_main_process:
            tqdm.write(launch_in_words(self.recipe, self.accelerator), file=sys.stderr)
            if self.resume_from is None:
                write_run_info(self.out, self.recipe)
        position = read_position(self.resume_from) if self.resume_from else Position()
        last_metrics: dict[str, float] = {}
        try:
            with StopFlag() as stop, lost_output_stops(stop), shape_stable_attention():
                for stage_index in range(position.stage, len(self.recipe.stages)):
                    if stage_index != position.stage:
                        # Each stage weighs its losses its own way: its best is compared within the stage only.
                        position = Position(stage=stage_index, global_step=position.global_step)
                    last_metrics = self._run_stage(stage_index, position, stop)
            export_dir = self._export()
        except RuntimeError as exc:
            lost = self.accelerator.num_processes > 1 and lost_a_process(exc, self.checkpoints, self.commands.resume)
            if lost:
                raise lost from None
            raise
        finally:
            self.metrics.close()
            self.writer.wait()
            self._release_locks()
        return RunSummary(position.global_step, last_metrics, export_dir)

    def close(self) -> None:
        """After a run that every process ended together: a process group left to interpreter shutdown can abort
        a process at exit, which the launcher reports as a failed run."""
        if self.accelerator.num_processes > 1:
            self.relay.settle()  # the last step's reduction, still in flight on its group
            self.accelerator.wait_for_everyone()
            self.accelerator.end_training()

    def _load_resume_checkpoint(self, stage_index: int, position: Position) -> None:
        """Weights, moments, schedule step and RNG from the checkpoint; every setting from the recipe."""
        assert self.resume_from is not None
        settings, base_lrs = resume.hyperparameters(self.optimizer), list(self.scheduler.base_lrs)
        model = self.accelerator.unwrap_model(self.prepared)
        try:
            processes = (self.accelerator.process_index, self.accelerator.num_processes)
            load_checkpoint(self.resume_from, model, self.optimizer, self.scheduler, *processes)
        except Exception as exc:  # a truncated or foreign file: name it rather than show a loader traceback
            mismatch = resume.weights_do_not_fit(self.resume_from, self.resume_report, self.commands.launcher)
            raise (mismatch or damaged_checkpoint(self.resume_from, exc, self.commands.resume)) from None
        if self.accelerator.is_main_process:
            tqdm.write(
                f"resuming from {self.resume_from} (stage {self.recipe.stages[stage_index].name!r}, step "
                f"{position.global_step}; epoch {position.epoch}, batch {position.batch})",
                file=sys.stderr,
            )
            changes = resume.describe_changes(self.resume_report) if self.resume_report else None
            if changes:
                tqdm.write(changes, file=sys.stderr)
            write_run_info(self.out, self.recipe, resumed_at=position.global_step)
        note = resume.forget_incomparable_best(self.resume_report, stage_index, position, self.recipe.output.keep_best)
        if note and self.accelerator.is_main_process:
            tqdm.write(note, file=sys.stderr)
        self.resume_from = None
        self.batches.rescale(stage_index, self.recipe.stages[stage_index], position)
        self.scheduler.last_epoch = position.stage_step  # the schedule follows the stage's steps, recounted or not
        resume.reapply(self.optimizer, self.scheduler, settings, base_lrs)

    def _run_stage(self, stage_index: int, position: Position, stop: StopFlag) -> dict[str, float]:
        recipe, accelerator = self.recipe, self.accelerator
        stage = recipe.stages[stage_index]
        total = self.batches.total_steps(stage_index, stage)
        # Allowed for smoke runs, but said: here for a stage counted in epochs, sized from the data only now (one
        # counted in steps is warned of, at its file:line, by recipe_warnings).
        if stage.epochs and stage.warmup_steps >= total and accelerator.is_main_process:
            tqdm.write(
                f"warning: stages[{stage_index}].warmup_steps {stage.warmup_steps} is not below the stage's "
                f"{total} steps ({stage.epochs:g} epoch{'' if stage.epochs == 1 else 's'}): the learning rate never "
                "reaches lr",
                file=sys.stderr,
            )
        enter_stage(self.parts.model, stage, recipe.hardware.trained_weights)
        optimizer, self.scheduler, self.group_parts = build_optimizer(
            stage,
            parameters_by_part(self.parts.model),
            total,
            accelerator.device.type,
            recipe.hardware.trained_weights,
            recipe.hardware.seed,
        )
        accelerator.free_memory()
        self.prepared, self.optimizer = accelerator.prepare(self.parts.model, optimizer)
        compiled = compile_wanted(recipe.hardware.compile, accelerator.device.type)
        if compiled:
            self.prepared = compile_for_varied_lengths(self.prepared)
        resuming = self.resume_from is not None and read_position(self.resume_from).stage == stage_index
        if resuming:
            self._load_resume_checkpoint(stage_index, position)
        objective = objective_for(recipe, self.parts, stage, compiled, accelerator.unwrap_model)
        try:
            last = self._train_stage(stage_index, total, position, objective, stop)
        except DataFailure as failure:
            reason = failure.reason
        except RuntimeError as exc:
            death = worker_death(exc)
            if death is None:
                raise
            reason = death.reason
        except OSError as exc:  # the metrics log on a full or vanished disk: checkpoints have their own message
            target = Path(exc.filename) if exc.filename else self.out
            then = f"then continue with `{self.commands.resume}`"
            raise write_failed(self.checkpoints, target, exc, then, self.recipe.output.keep_last) from None
        else:
            leave_stage(self.parts.model, stage)
            return last
        self._keep_finished_steps(position)
        raise data_failed(self.checkpoints, position.global_step + 1, reason, self.commands, self.parts.reads_cache)

    def _train_stage(
        self, stage_index: int, total: int, position: Position, objective: Objective, stop: StopFlag
    ) -> dict[str, float]:
        recipe, accelerator = self.recipe, self.accelerator
        stage = recipe.stages[stage_index]
        if position.stage_step == 0:
            first = self._evaluate_or_stop(objective, position, stop)
            if first is None:  # stopped before this stage trained anything
                raise TrainingInterrupted(
                    f"interrupted before the first step of stage {stage.name!r}, with nothing new to save "
                    f"({last_checkpoint(self.checkpoints, 'the last checkpoint')}); continue with "
                    f"`{self.commands.resume}`"
                )
            self._log(position.global_step, {"stage": stage.name, **first})
            for line in empty_tier_warnings(stage_index, stage, first) if accelerator.is_main_process else ():
                tqdm.write(line, file=sys.stderr)
        last: dict[str, float] = {}
        if position.eval_pending:
            last = self._pending_evaluation(objective, position, stop)
        stream = self.batches.stream(stage_index, position)
        clock, consensus = SaveClock(recipe.output.save_every_minutes), Consensus(accelerator)
        nonfinite = torch.zeros((), dtype=torch.bool, device=accelerator.device)
        window, position.loss_window = LossWindow(accelerator, position.loss_window), None
        self.prepared.train()
        with tqdm(
            total=total,
            initial=position.stage_step,
            desc=stage.name,
            dynamic_ncols=True,
            disable=not (self.progress and accelerator.is_main_process),
            file=HangupTolerantStream(sys.stderr),
        ) as bar:
            while position.stage_step < total:
                self._step(stream, position, objective, stage, nonfinite, window)
                bar.update(1)
                step = position.global_step
                at_end, output = position.stage_step == total, recipe.output
                logging = step % output.log_every_steps == 0 or at_end
                evaluating = step % output.eval_every_steps == 0 or at_end
                by_count = step % output.save_every_steps == 0 or at_end
                agreed = {"stop": False, "clock": False}
                # Steps every process knows to be decision steps; a single process also acts on a signal, and on
                # its clock, at once (several processes ask their clocks at logging steps, where they agree anyway).
                clock_due = (logging or consensus.alone) and clock.due()
                relayed = self.relay.heard(stop.raised)  # several processes: a signal of a step ago, known to all
                if logging or evaluating or by_count or relayed or (consensus.alone and clock_due):
                    agreed = consensus.agree(nonfinite=nonfinite, stop=stop.raised, clock=clock_due)
                    if agreed["nonfinite"]:
                        raise diverged(self.checkpoints, step, stage_index, self.commands.resume)
                if logging:
                    # The rate each part (its decayed and undecayed weights alike) trained with at this step.
                    lrs = {f"lr/{part}": lr for part, lr in zip(self.group_parts, self.step_lrs, strict=True)}
                    values = {"stage": stage.name, **window.take(), **lrs}
                    # Without a bar (--no-progress, a log file) each row is a line too; with one, its figures.
                    self._log(step, values, f"{position.stage_step}/{total}", said=not bar.disable)
                    bar.set_postfix(
                        loss=f"{values['loss']:.4f}",
                        lr=f"{next(iter(lrs.values())):.2e}",
                        tok_s=f"{values['tokens_per_s']:.0f}",
                    )
                if evaluating:  # the weights may be kept as `best`
                    position.loss_window = window.carry()
                fresh = self._evaluate_or_stop(objective, position, stop) if evaluating else {}
                if fresh is None or (consensus.alone and stop.raised):  # a stop during this step's evaluation
                    agreed["stop"], fresh = True, {}
                    position.eval_pending = evaluating and self.parts.eval is not None
                if fresh:  # none: no eval data, or an evaluation cut short by a stop (an earlier one is not news)
                    last = fresh
                    self._record_evaluation(position, stage.name, fresh)
                if by_count or agreed["stop"] or agreed["clock"]:  # every process agreed: all of them are here
                    position.loss_window = window.carry()
                    self._save(position)
                    clock.restart()
                if agreed["stop"]:
                    self._settle_before_stopping()
                    raise TrainingInterrupted(
                        f"interrupted at step {step}; checkpoint saved in {self.checkpoints / checkpoint_name(step)}; "
                        f"continue with `{self.commands.resume}`"
                    )
                position.loss_window = None
        return last

    def _settle_before_stopping(self) -> None:
        """torchrun ends every process once one exits: none leaves before the first has written the sums of the
        checkpoint just saved (a checkpoint whose sums were cut short loads unchecked)."""
        if self.accelerator.num_processes > 1:
            self.writer.wait()
            self.accelerator.wait_for_everyone()

    def _log(self, step: int, values: dict, of: str = "", said: bool = False) -> None:
        """A metrics row, also as a line on stderr (above the progress bar) unless the bar `said` it already."""
        self.metrics.write(step, values)
        if not said and self.accelerator.is_main_process and len(values) > 1:  # more than the stage's name
            tqdm.write(metrics_line(step, values, of), file=HangupTolerantStream(sys.stderr))

    def _record_evaluation(self, position: Position, stage: str, metrics: dict[str, float]) -> None:
        """Log an evaluation of the current weights, and keep them as the best checkpoint when they are."""
        self._log(position.global_step, {"stage": stage, **metrics})
        better = position.best_eval is None or metrics["eval/loss"] < position.best_eval
        if self.recipe.output.keep_best and better:
            kept, position.best_eval = position.best_eval, metrics["eval/loss"]
            if not self._save(position, name="best"):
                position.best_eval = kept  # what `best` holds: a later evaluation is compared with that

    def _pending_evaluation(self, objective: Objective, position: Position, stop: StopFlag) -> dict[str, float]:
        """The evaluation that a stop cut short before the checkpoint this run resumed from, made before any
        training, on the weights it was due for; a stop during it leaves that checkpoint pending as it was."""
        fresh = self._evaluate_or_stop(objective, position, stop)
        if fresh is None:
            raise TrainingInterrupted(
                f"interrupted during the evaluation of step {position.global_step}, which was cut short before; "
                f"nothing new to save ({last_checkpoint(self.checkpoints, 'the last checkpoint')}); continue with "
                f"`{self.commands.resume}`"
            )
        position.eval_pending = False
        if fresh:
            self._record_evaluation(position, self.recipe.stages[position.stage].name, fresh)
        return fresh

    def _step(
        self,
        stream: Iterator[tuple[DistillBatch | TextBatch, int, int, int]],
        position: Position,
        objective: Objective,
        stage: Stage,
        nonfinite: torch.Tensor,
        window: LossWindow,
    ) -> None:
        """One optimizer step over grad_accum micro-batches. `position` and the weights change together, in a section
        that a loader worker's death cannot interrupt, so that whatever stops the run finds them in agreement; a step
        that runs out of memory stops with a checkpoint of the steps before it."""
        shape = None
        try:
            for _ in range(self.recipe.hardware.grad_accum):
                batch, *data_position = next_batch(stream)
                shape = tuple(batch.student_ids.shape)
                loss = self._micro_step(batch, objective, stage)
                nonfinite |= ~torch.isfinite(loss.detach())
                window.add(loss, batch.student_tokens)
        except torch.OutOfMemoryError:
            pass  # handled below: the exception's traceback holds the frames that hold the activations
        except SamplingDiverged:  # an on-policy stage samples from the weights the step before left
            what = "the student's sampling probabilities"
            step = position.global_step + 1
            raise diverged(self.checkpoints, step, position.stage, self.commands.resume, what) from None
        else:
            with child_signals_deferred():
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.step_lrs = self.scheduler.get_last_lr()  # after `step()` it holds the next step's rates
                self.scheduler.step()
                position.epoch, position.batch, position.epoch_batches = data_position
                position.stage_step += 1
                position.global_step += 1
            return
        batch = loss = None
        self._keep_finished_steps(position)
        device = self.accelerator.device.type
        raise out_of_memory(
            self.recipe, self.checkpoints, device, shape, position.global_step + 1, "training", self.commands
        )

    def _evaluate_or_stop(self, objective: Objective, position: Position, stop: StopFlag) -> dict[str, float] | None:
        try:
            return self._evaluate(objective, stop)
        except torch.OutOfMemoryError:
            pass
        self._keep_finished_steps(position)
        device = self.accelerator.device.type
        raise out_of_memory(
            self.recipe, self.checkpoints, device, None, position.global_step, "evaluation", self.commands
        )

    def _keep_finished_steps(self, trained: Position) -> None:
        """Before a run stops on a failure that left the weights as the last finished step made them, save that step
        if no checkpoint has it yet. A single process only: under several, the others wait in a collective (and
        torchrun stops them), so the last periodic checkpoint stands."""
        self.optimizer.zero_grad(set_to_none=True)
        gc.collect()
        if self.accelerator.device.type == "cuda":
            torch.cuda.empty_cache()
        kept = step_checkpoints(self.checkpoints)
        newest = read_position(kept[-1]).global_step if kept else 0
        if self.accelerator.num_processes == 1 and trained.global_step > newest:
            with contextlib.suppress(CheckpointWriteError):  # the stop message names the newest one that exists
                self._save(trained)

    def _micro_step(self, batch: DistillBatch | TextBatch, objective: Objective, stage: Stage) -> torch.Tensor:
        """Forward, loss and backward of one micro-batch (gradients all-reduced and clipped on the last one)."""
        accelerator = self.accelerator
        self.parts.checkpointing.for_batch(batch.student_ids.numel())
        with accelerator.accumulate(self.prepared), accelerator.autocast():
            loss = objective.training_loss(self.prepared, batch)
            accelerator.backward(loss)
            if accelerator.sync_gradients and stage.grad_clip is not None:
                accelerator.clip_grad_norm_(self.prepared.parameters(), stage.grad_clip)
        return loss

    def _export(self) -> Path | None:
        if not self.recipe.output.export or not self.accelerator.is_main_process:
            return None
        model = self.accelerator.unwrap_model(self.prepared)
        return export_at_end(self.recipe, model, self.parts.student_tokenizer, self.commands)

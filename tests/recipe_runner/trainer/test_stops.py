"""Stop messages name the setting that would have helped, for the batching in use."""

from __future__ import annotations

import errno
import io

import pytest

from recipe_runner.loader import load_recipe
from recipe_runner.next_commands import NextCommands
from recipe_runner.trainer.stops import (
    HangupTolerantStream,
    TrainingDiverged,
    lost_a_process,
    out_of_memory,
    what_failed,
    write_failed,
)

COMMANDS = NextCommands("r.yaml", ("output.dir=runs/b",))
RESUME = "recipe run r.yaml --set output.dir=runs/b --resume"


def test_out_of_memory_under_a_token_budget_asks_for_a_smaller_budget(tiny_recipe_path, tiny_overrides, tmp_path):
    budgeted = load_recipe(tiny_recipe_path, [*tiny_overrides, "hardware.batch_size=64", "hardware.batch_tokens=512"])
    message = str(
        out_of_memory(budgeted.recipe, tmp_path, "cuda", (8, 60), step=3, during="training", commands=COMMANDS)
    )
    assert "lower hardware.batch_tokens (now 512; this batch: 480 padded tokens)" in message
    assert "hardware.batch_size" not in message
    # A single prompt longer than the budget is not the budget's doing.
    long_one = str(
        out_of_memory(budgeted.recipe, tmp_path, "cuda", (1, 600), step=3, during="training", commands=COMMANDS)
    )
    assert "lower hardware.batch_size (now 64)" in long_one


def test_out_of_memory_by_prompt_count_asks_for_a_smaller_batch_size(tiny_recipe_path, tiny_overrides, tmp_path):
    recipe = load_recipe(tiny_recipe_path, tiny_overrides).recipe
    message = str(out_of_memory(recipe, tmp_path, "cuda", (16, 40), step=1, during="training", commands=COMMANDS))
    assert "lower hardware.batch_size (now 16) and raise grad_accum" in message
    assert "batch_tokens" not in message


def test_out_of_memory_in_evaluation_names_it_and_leaves_out_training_only_remedies(
    tiny_recipe_path, tiny_overrides, tmp_path
):
    recipe = load_recipe(tiny_recipe_path, [*tiny_overrides, "hardware.gradient_checkpointing=false"]).recipe
    message = str(out_of_memory(recipe, tmp_path, "cuda", None, step=40, during="evaluation", commands=COMMANDS))
    assert message.startswith("out of cuda memory in the evaluation at step 40; no checkpoint had been written yet")
    assert "lower hardware.batch_size (now 16);" in message
    assert "grad_accum" not in message and "gradient_checkpointing" not in message
    assert "`recipe plan r.yaml --set output.dir=runs/b` estimates the peak" in message
    assert "`recipe bench r.yaml --set output.dir=runs/b` measures it" in message
    assert message.endswith(f"then continue with `{RESUME}`.")


def test_a_data_failure_offers_the_cache_check_only_to_a_run_that_reads_a_cache(tmp_path):
    from recipe_runner.trainer.stops import data_failed

    reading = str(data_failed(tmp_path, 3, "RuntimeError: worker died", COMMANDS, reads_cache=True))
    assert "rewritten by `recipe cache r.yaml --set output.dir=runs/b --verify`" in reading
    assert reading.endswith(f"Then continue with `{RESUME}`.")
    live = str(data_failed(tmp_path, 3, "RuntimeError: worker died", COMMANDS, reads_cache=False))
    assert "recipe cache" not in live and live.endswith(f"main process). Then continue with `{RESUME}`.")


def test_what_failed_in_a_loader_worker_is_the_original_error_not_the_wrapper():
    from torch._utils import ExceptionWrapper

    try:
        raise FileNotFoundError(2, "No such file or directory", "cache/shard-00003.safetensors")
    except FileNotFoundError:
        wrapped = ExceptionWrapper(where="in DataLoader worker process 0")
    with pytest.raises(FileNotFoundError) as caught:
        wrapped.reraise()  # how a DataLoader hands a worker's exception to the training process
    assert what_failed(caught.value) == (
        "FileNotFoundError: [Errno 2] No such file or directory: 'cache/shard-00003.safetensors'"
    )
    assert what_failed(RuntimeError("first line\nsecond")) == "RuntimeError: first line"
    assert what_failed(ValueError()) == "ValueError"


class _Failing(io.StringIO):
    def __init__(self, code: int) -> None:
        super().__init__()
        self.code = code

    def write(self, text: str) -> int:
        raise OSError(self.code, "failed")


def test_the_progress_bar_drops_writes_to_a_hung_up_terminal_and_nothing_else():
    assert HangupTolerantStream(_Failing(errno.EIO)).write("42%") == 0
    with pytest.raises(OSError, match="failed"):
        HangupTolerantStream(_Failing(errno.ENOSPC)).write("42%")
    kept = io.StringIO()
    HangupTolerantStream(kept).write("42%")
    assert kept.getvalue() == "42%"


def test_an_output_whose_reader_went_away_goes_nowhere_and_says_so_once_per_write():
    import os

    read, write = os.pipe()
    os.close(read)
    lost = []
    stream = HangupTolerantStream(os.fdopen(write, "w", buffering=1), lambda: lost.append(1))
    assert stream.write("step 5\n") == 0 and lost == [1]
    assert stream.write("step 6\n") == 7 and lost == [1]  # the descriptor now leads to /dev/null
    stream.flush()
    stream.stream.close()


@pytest.mark.parametrize(
    ("code", "keep_last", "advice"),
    [
        (errno.ENOSPC, 3, "Free space there (or lower output.keep_last, now 3), then"),
        (errno.ENOSPC, 1, "Free space there, then"),
        (errno.EROFS, 3, "Make it writable again, then"),
    ],
)
def test_a_failed_write_asks_for_space_or_for_write_access_as_the_cause_was(tmp_path, code, keep_last, advice):
    error = write_failed(tmp_path, tmp_path / "best", OSError(code, "reason"), "then go on", keep_last)
    assert str(error) == (
        f"could not write {tmp_path / 'best'}: reason; no earlier checkpoint exists (a checkpoint is never left "
        f"half-written). {advice} go on."
    )


def test_a_collective_that_lost_its_other_process_is_one_line_with_the_checkpoint_and_the_resume(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    gloo = RuntimeError(
        "[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:44440: Connection reset "
        "by peer. This is typically caused by a remote worker hanging"
    )
    lost = lost_a_process(gloo, tmp_path / "checkpoints", RESUME)
    assert str(lost).startswith("process 0 lost touch with the other processes of this launch (Connection reset ")
    assert str(lost).endswith(f"no checkpoint had been written yet; continue with `{RESUME}`")
    assert lost_a_process(RuntimeError("shape mismatch"), tmp_path, RESUME) is None  # a bug of its own: as it is
    said = TrainingDiverged("loss became NaN or inf; Connection reset by peer")
    assert lost_a_process(said, tmp_path, RESUME) is None

"""Checkpoint sums: taken beside training, and any changed, resized or missing file is named before a load."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from recipe_runner.trainer.checksums import SUMS, BackgroundChecksums, ChecksumMismatch, verify_checksums


def _checkpoint(directory: Path) -> Path:
    directory.mkdir()
    save_file({"w": torch.arange(64, dtype=torch.float32)}, str(directory / "model.safetensors"))
    (directory / "trainer_state.json").write_text('{"global_step": 4}')
    (directory / ".leftover.tmp").write_text("a writer's temporary file")
    return directory


def _summed(directory: Path) -> Path:
    sums = BackgroundChecksums()
    sums.start(directory)
    assert sums.wait() == []
    return directory


def _flip_a_weight_byte(path: Path) -> None:
    """A change safetensors cannot notice: the header stays whole, one value differs."""
    data = bytearray(path.read_bytes())
    data[-5] ^= 0x01
    path.write_bytes(bytes(data))


def test_sums_cover_every_file_and_an_untouched_checkpoint_verifies(tmp_path):
    directory = _summed(_checkpoint(tmp_path / "step"))
    sums = json.loads((directory / SUMS).read_text())
    assert sorted(sums) == ["model.safetensors", "trainer_state.json"]
    assert sums["model.safetensors"]["bytes"] == (directory / "model.safetensors").stat().st_size
    assert verify_checksums(directory) is True


def test_a_changed_byte_is_named_though_the_file_still_loads(tmp_path):
    directory = _summed(_checkpoint(tmp_path / "step"))
    _flip_a_weight_byte(directory / "model.safetensors")
    load_file(str(directory / "model.safetensors"))  # safetensors alone would train on from it
    with pytest.raises(ChecksumMismatch, match=r"model\.safetensors is not the file it was written as"):
        verify_checksums(directory)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "trainer_state.json").write_text('{"global_step": 40}'), "holds 19 bytes, not the 18"),
        (lambda d: (d / "model.safetensors").unlink(), r"model\.safetensors is missing"),
        (lambda d: (d / SUMS).write_text("{not json"), r"checksums\.json is unreadable"),
    ],
)
def test_resized_missing_or_unreadable_is_a_mismatch(tmp_path, damage, message):
    directory = _summed(_checkpoint(tmp_path / "step"))
    damage(directory)
    with pytest.raises(ChecksumMismatch, match=message):
        verify_checksums(directory)


def test_a_checkpoint_without_sums_loads_unchecked(tmp_path):
    assert verify_checksums(_checkpoint(tmp_path / "step")) is False


def test_sums_that_cannot_be_written_are_reported_and_leave_the_checkpoint_as_it_was(tmp_path, monkeypatch):
    import recipe_runner.trainer.checksums as checksums

    def disk_full(final, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(final))

    directory = _checkpoint(tmp_path / "step")
    before = {p.name: p.read_bytes() for p in directory.iterdir()}
    monkeypatch.setattr(checksums, "write_json_atomic", disk_full)
    sums = BackgroundChecksums()
    sums.start(directory)
    failed = sums.wait()
    assert failed == [f"{directory}: {os.strerror(errno.ENOSPC)}"]
    assert sums.wait() == []  # reported once
    assert {p.name: p.read_bytes() for p in directory.iterdir()} == before
    assert verify_checksums(directory) is False

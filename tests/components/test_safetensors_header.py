"""The cheap safetensors check: every truncation or overwritten header is caught, and what it passes loads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from components.safetensors_header import DamagedFileError, read_header


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> bytes:
    path = tmp_path_factory.mktemp("st") / "whole.safetensors"
    save_file({"hidden": torch.ones(5, 3), "offsets": torch.arange(3)}, str(path), metadata={"first": "4"})
    return path.read_bytes()


def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "file.safetensors"
    path.write_bytes(data)
    return path


def test_a_whole_file_gives_its_header(whole, tmp_path):
    header = read_header(_write(tmp_path, whole))
    assert header["hidden"]["shape"] == [5, 3] and header["offsets"]["dtype"] == "I64"
    assert header["__metadata__"] == {"first": "4"}


@pytest.mark.parametrize("keep", [0, 5, 8, 100, -1])
def test_every_truncation_is_caught(whole, tmp_path, keep):
    with pytest.raises(DamagedFileError, match="cut short"):
        read_header(_write(tmp_path, whole[:keep]))


def test_trailing_bytes_and_a_garbled_header_are_caught(whole, tmp_path):
    with pytest.raises(DamagedFileError, match="4 bytes after its last tensor"):
        read_header(_write(tmp_path, whole + b"\0" * 4))
    with pytest.raises(DamagedFileError, match="not valid JSON"):
        read_header(_write(tmp_path, whole[:8] + b"\xff" * 20 + whole[28:]))


def test_a_shape_that_does_not_fill_its_span_is_caught(tmp_path):
    header = json.dumps({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}).encode()
    data = len(header).to_bytes(8, "little") + header + b"\0" * 8
    with pytest.raises(DamagedFileError, match="declares shape \\[3\\] but spans 8 bytes"):
        read_header(_write(tmp_path, data))


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0, max_value=200), garbage=st.binary(min_size=1, max_size=16))
def test_whatever_passes_the_check_opens(whole, tmp_path_factory, position, garbage):
    """Overwriting bytes of the length or header is either caught here or harmless to safetensors."""
    data = bytearray(whole)
    data[position : position + len(garbage)] = garbage
    path = _write(tmp_path_factory.mktemp("garbled"), bytes(data[: len(whole)]))
    try:
        read_header(path)
    except DamagedFileError:
        return
    try:
        with safe_open(str(path), framework="pt") as handle:
            names = handle.keys()
            for name in names:
                handle.get_slice(name)
    except SafetensorError as exc:
        pytest.fail(f"passed the check but safetensors refuses it: {exc}")

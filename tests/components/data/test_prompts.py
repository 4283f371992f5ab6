"""Prompt files that cannot be used say which file, where, and what to do (components.data.prompts)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from components.data import prompts as prompts_module
from components.data.prompts import DataFileError, data_file_problem, read_prompts
from components.errors import UserFacingError
from schemas.data import DataFile


def _read(path: Path, **fields) -> list[str]:
    return read_prompts(DataFile(path=str(path), **fields))


def test_a_file_that_is_not_utf8_names_the_line_and_byte(tmp_path: Path) -> None:
    bad = tmp_path / "bad.txt"
    bad.write_bytes("a fox\ncafé\n".encode() + b"\xff\n")
    with pytest.raises(DataFileError) as exc:
        _read(bad)
    assert str(exc.value) == f"{bad}:3: not UTF-8 (byte 0xff at byte offset 12): save it as UTF-8"
    assert isinstance(exc.value, UserFacingError)


def test_a_jsonl_file_that_is_not_utf8(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'{"text": "caf\xe9"}\n')
    with pytest.raises(DataFileError, match=r"bad.jsonl:1: not UTF-8 \(byte 0xe9 at byte offset 13\)"):
        _read(bad)


def test_a_folder_is_not_a_data_file(tmp_path: Path) -> None:
    folder = tmp_path / "prompts.txt"
    folder.mkdir()
    with pytest.raises(DataFileError) as exc:
        _read(folder)
    assert str(exc.value) == f"{folder} is a directory, not a data file: name a .txt or .jsonl file in it"


def test_a_named_pipe_is_not_called_missing(tmp_path: Path) -> None:
    pipe = tmp_path / "prompts.txt"
    os.mkfifo(pipe)
    with pytest.raises(DataFileError) as exc:
        _read(pipe)  # returns at once: nothing opens the pipe, which would wait for a writer
    assert "is not a regular file (a pipe, socket or device)" in str(exc.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataFileError, match="data file not found: .*absent.txt"):
        _read(tmp_path / "absent.txt")


def test_an_unreadable_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    locked = tmp_path / "locked.txt"
    locked.write_text("a fox\n")
    monkeypatch.setattr(prompts_module.os, "access", lambda path, mode: False)  # chmod 000 does not stop root
    assert data_file_problem(locked) == f"cannot read data file {locked}: permission denied"
    with pytest.raises(DataFileError, match="permission denied"):
        _read(locked)


def test_a_read_that_fails_midway_is_a_data_file_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = tmp_path / "prompts.txt"
    file.write_text("a fox\n")

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(DataFileError) as exc:
        _read(file)
    assert str(exc.value) == f"cannot read data file {file}: Permission denied"


def test_good_files_still_read(tmp_path: Path) -> None:
    file = tmp_path / "prompts.txt"
    file.write_text("a fox\r\n\n  café  \nlast", encoding="utf-8")
    assert _read(file) == ["a fox", "café", "last"]
    assert data_file_problem(file) is None


def test_a_byte_order_mark_is_not_part_of_the_first_prompt(tmp_path: Path) -> None:
    text, records = tmp_path / "bom.txt", tmp_path / "bom.jsonl"
    text.write_bytes(b"\xef\xbb\xbfa fox\nan owl\n")
    records.write_bytes(b'\xef\xbb\xbf{"text": "a fox"}\n')
    assert _read(text) == ["a fox", "an owl"] and _read(records) == ["a fox"]


def test_a_jsonl_record_without_the_field_lists_its_keys_and_the_setting(tmp_path: Path) -> None:
    records = tmp_path / "p.jsonl"
    records.write_text('{"prompt": "a fox", "id": 3}\n')
    with pytest.raises(DataFileError) as caught:
        _read(records)
    assert str(caught.value) == (
        f"{records}:1: record has no string field 'text' (its keys: 'prompt', 'id'); set this data file's `field:` "
        "to the key that holds the prompt"
    )
    assert _read(records, field="prompt") == ["a fox"]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"text": 5}', "p.jsonl:2: field 'text' holds int, not text"),
        ('{"text": null}', "p.jsonl:2: field 'text' holds null, not text"),
        ('{"text": ["a"]}', "p.jsonl:2: field 'text' holds list, not text"),
        ("[" * 100_000 + "]" * 100_000, "p.jsonl:2: JSON nested too deeply to be a prompt record"),
    ],
)
def test_a_jsonl_line_that_holds_no_prompt_text_names_its_line(tmp_path: Path, line: str, message: str) -> None:
    records = tmp_path / "p.jsonl"
    records.write_text(f'{{"text": "a fox"}}\n{line}\n')
    with pytest.raises(DataFileError, match=re.escape(message)):
        _read(records)

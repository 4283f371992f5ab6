"""Atomic writes: only an earlier output of the same kind is ever replaced, a crash mid-swap loses nothing,
and what is written is as readable as any file made under the umask."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import components.atomic_files as atomic_files
from components.atomic_files import (
    ForeignDirectoryError,
    atomic_directory,
    current_umask,
    recover_directory,
    save_safetensors_atomic,
    write_json_atomic,
)
from components.errors import UserFacingError

MARKER = "done.json"


def _write(final: Path, text: str) -> None:
    with atomic_directory(final, MARKER, "thing", "choose another --out") as tmp:
        (tmp / "data.txt").write_text(text)
        (tmp / MARKER).write_text("{}")


def _users_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "README.md").write_text("my notes")
    return path


def test_a_directory_without_the_marker_is_refused_and_left_as_it_was(tmp_path):
    final = _users_dir(tmp_path / "out")
    with pytest.raises(ForeignDirectoryError) as caught:
        _write(final, "new")
    message = str(caught.value)
    assert isinstance(caught.value, UserFacingError)
    assert str(final) in message and "not a previous thing" in message and MARKER in message
    assert "choose another --out" in message and "move" in message
    assert (final / "README.md").read_text() == "my notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "no temporary directory left"


def test_a_file_in_the_way_is_refused(tmp_path):
    (tmp_path / "out").write_text("mine")
    with pytest.raises(ForeignDirectoryError, match="is a file but not a previous thing"):
        _write(tmp_path / "out", "new")
    assert (tmp_path / "out").read_text() == "mine"


def test_an_empty_directory_or_an_earlier_output_is_replaced(tmp_path):
    (tmp_path / "out").mkdir()
    _write(tmp_path / "out", "first")
    assert (tmp_path / "out" / "data.txt").read_text() == "first"
    _write(tmp_path / "out", "second")
    assert (tmp_path / "out" / "data.txt").read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"], "the old copy is removed"


def test_files_a_user_added_to_an_earlier_output_block_its_replacement(tmp_path):
    final = tmp_path / "out"

    def not_written(directory: Path) -> list[str]:
        return sorted(entry.name for entry in directory.iterdir() if entry.name not in ("data.txt", MARKER))

    def write_owned(text: str) -> None:
        with atomic_directory(final, MARKER, "thing", "choose another --out", added=not_written) as tmp:
            (tmp / "data.txt").write_text(text)
            (tmp / MARKER).write_text("{}")

    write_owned("first")
    write_owned("second")  # an earlier output as it was written is replaced
    (final / "README.md").write_text("my notes")
    (final / "samples").mkdir()
    with pytest.raises(ForeignDirectoryError) as caught:
        write_owned("third")
    assert "is a previous thing, but also holds README.md, samples (not written by recipe)" in str(caught.value)
    assert (final / "README.md").read_text() == "my notes" and (final / "data.txt").read_text() == "second"


def test_what_appears_at_the_target_during_the_write_is_kept(tmp_path):
    final = tmp_path / "out"
    with pytest.raises(ForeignDirectoryError), atomic_directory(final, MARKER) as tmp:
        (tmp / MARKER).write_text("{}")
        _users_dir(final)
    assert (final / "README.md").read_text() == "my notes"
    assert not (final / MARKER).exists()


def _crash_between_the_renames(final: Path, monkeypatch) -> None:
    """Leaves what a crash after `final -> .final.old` and before `tmp -> final` leaves."""
    real_replace = os.replace

    def replace(src, dst):
        if Path(dst) == final:
            raise KeyboardInterrupt("killed")
        real_replace(src, dst)

    monkeypatch.setattr(atomic_files.os, "replace", replace)
    with pytest.raises(KeyboardInterrupt):
        _write(final, "second")
    monkeypatch.setattr(atomic_files.os, "replace", real_replace)


def test_a_crash_mid_swap_is_undone_by_the_next_write(tmp_path, monkeypatch):
    final = tmp_path / "out"
    _write(final, "first")
    _crash_between_the_renames(final, monkeypatch)
    assert not final.exists() and (tmp_path / ".out.old" / MARKER).is_file()

    # the next write starts from the restored copy: had it failed too, "first" would still be there
    with pytest.raises(OSError, match="disk full"), atomic_directory(final, MARKER):
        raise OSError("disk full")
    assert (final / "data.txt").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_recover_directory_puts_back_only_a_complete_copy(tmp_path, monkeypatch):
    final = tmp_path / "out"
    _write(final, "first")
    _crash_between_the_renames(final, monkeypatch)
    assert recover_directory(final, MARKER)
    assert (final / "data.txt").read_text() == "first"
    assert not recover_directory(final, MARKER), "nothing to do when the directory is there"

    (tmp_path / ".half").mkdir()
    (tmp_path / ".half.old").mkdir()
    assert not recover_directory(tmp_path / "half", MARKER), "no marker: not a complete copy"
    assert not (tmp_path / "half").exists()


@pytest.fixture(params=[0o022, 0o027])
def umask(request):
    previous = os.umask(request.param)
    yield request.param
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_written_files_and_directories_follow_the_umask(tmp_path, umask):
    assert current_umask() == umask and current_umask() == umask, "reading the umask leaves it as it was"
    tensors = {"x": torch.zeros(2)}
    write_json_atomic(tmp_path / "file.json", {})
    save_safetensors_atomic(tmp_path / "shard.safetensors", tensors)  # safetensors saves through a 0600 temporary
    with atomic_directory(tmp_path / "dir", MARKER) as tmp:
        (tmp / "sub").mkdir(mode=0o700)
        save_file(tensors, str(tmp / "sub" / "model.safetensors"))
        (tmp / MARKER).write_text("{}")
    for file in ("file.json", "shard.safetensors", "dir/sub/model.safetensors", f"dir/{MARKER}"):
        assert _mode(tmp_path / file) == 0o666 & ~umask, file
    assert _mode(tmp_path / "dir") == _mode(tmp_path / "dir" / "sub") == 0o777 & ~umask


_WRITER = """
import sys, time
from pathlib import Path
from components.atomic_files import atomic_directory
with atomic_directory(Path(sys.argv[1]), "done.json") as tmp:
    (tmp / "weights.bin").write_bytes(b"x" * 1000)
    print(tmp, flush=True)
    time.sleep(60)
"""


def _writer_killed_mid_write(final: Path) -> Path:
    """A real process that dies by SIGKILL while building `final`; returns the temporary directory it left."""
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(final)], stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parents[2]
    )
    left = Path(writer.stdout.readline().strip())
    writer.kill()
    writer.wait()
    assert left.is_dir()
    return left


def _age(*paths: Path) -> None:
    old = time.time() - 2 * atomic_files.STALE_SECONDS
    for path in paths:
        os.utime(path, (old, old))


def _copy(parent: Path, name: str, lock: bool = True) -> Path:
    """A temporary directory as a writer makes it, with its lock file beside it unless `lock` is false."""
    directory = parent / name
    directory.mkdir()
    (directory / "weights.bin").write_bytes(b"x")
    if lock:
        directory.with_name(name + ".lock").touch()
    return directory


@pytest.mark.skipif(not hasattr(os, "fork"), reason="flock is POSIX")
def test_the_copy_a_killed_writer_left_is_deleted_by_the_next_write(tmp_path, capsys):
    final = tmp_path / "export"
    left = _writer_killed_mid_write(final)
    lock = left.with_name(left.name + ".lock")
    assert lock.is_file()
    _age(left, lock)
    with atomic_directory(final, MARKER) as tmp:
        (tmp / MARKER).write_text("{}")
    assert not left.exists() and not lock.exists() and (final / MARKER).is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["export"]
    assert f"removed {left}: a partial copy of export left by a writer that was killed" in capsys.readouterr().err


def test_only_a_dead_writers_own_copies_are_deleted(tmp_path):
    fcntl = pytest.importorskip("fcntl")
    final = tmp_path / "export"
    live, fresh = _copy(tmp_path, ".export.live0001.tmp"), _copy(tmp_path, ".export.new00002.tmp")
    users = [_copy(tmp_path, ".export.backup.tmp"), _copy(tmp_path, ".export.abcd1234.tmp", lock=False)]
    other = _copy(tmp_path, ".export.v2.x3abcdef.tmp")  # the copy of another output, `export.v2`
    for directory in (live, *users, other):
        lock = directory.with_name(directory.name + ".lock")
        _age(directory, *([lock] if lock.exists() else []))
    handle = os.open(live.with_name(live.name + ".lock"), os.O_RDWR)
    fcntl.flock(handle, fcntl.LOCK_EX)  # another open file: conflicts as another process's lock would
    try:
        with atomic_directory(final, MARKER) as tmp:
            (tmp / MARKER).write_text("{}")
    finally:
        os.close(handle)
    assert all(p.is_dir() for p in (live, fresh, *users, other))  # alive; too new to tell; not ours
    assert (users[0] / "weights.bin").is_file()
    assert atomic_files.remove_stale_copies(final) == [live]  # its writer has gone now, and it is old


def test_where_no_lock_can_be_taken_the_write_goes_on_and_leaves_nothing(tmp_path, monkeypatch):
    fcntl = pytest.importorskip("fcntl")

    def refused(handle, operation):  # NFS refuses some flocks with EBADF
        raise OSError(9, "Bad file descriptor")

    monkeypatch.setattr(fcntl, "flock", refused)
    final = tmp_path / "export"
    with atomic_directory(final, MARKER) as tmp:
        (tmp / MARKER).write_text("{}")
    assert [p.name for p in tmp_path.iterdir()] == ["export"]


def test_a_disk_that_fills_under_safetensors_is_an_os_error_and_leaves_nothing(
    tmp_path, monkeypatch, disk_full_in_safetensors
):
    import errno

    import safetensors.torch

    def fills_up(*args, **kwargs):
        raise disk_full_in_safetensors

    monkeypatch.setattr(safetensors.torch, "save_file", fills_up)
    with pytest.raises(OSError) as in_a_file:
        save_safetensors_atomic(tmp_path / "shard.safetensors", {"x": torch.zeros(2)})
    with pytest.raises(OSError) as in_a_directory, atomic_directory(tmp_path / "out", MARKER) as tmp:
        safetensors.torch.save_file({"x": torch.zeros(2)}, str(tmp / "x.safetensors"))
    for caught in (in_a_file, in_a_directory):
        assert caught.value.errno == errno.ENOSPC and caught.value.strerror == "No space left on device"
    assert list(tmp_path.iterdir()) == []


def test_a_safetensors_error_that_is_not_a_failed_write_stays_what_it_is(tmp_path):
    from safetensors import SafetensorError

    with pytest.raises(SafetensorError, match="bad dtype"), atomic_directory(tmp_path / "out", MARKER):
        raise SafetensorError("bad dtype")

"""Free-space checks: the nearest existing folder is asked, and a shortfall is one clear error."""

from __future__ import annotations

import shutil
from collections import namedtuple

import pytest

from components.disk_space import NotEnoughDiskSpace, bytes_under, free_bytes, require_free, size_in_words
from components.errors import UserFacingError

Usage = namedtuple("Usage", "total used free")


def _free(monkeypatch, free: int, asked: list | None = None) -> None:
    def usage(path):
        if asked is not None:
            asked.append(path)
        return Usage(10 * free, 9 * free, free)

    monkeypatch.setattr(shutil, "disk_usage", usage)


def test_a_folder_not_made_yet_is_sized_on_its_nearest_existing_parent(tmp_path, monkeypatch):
    asked: list = []
    _free(monkeypatch, 5000, asked)
    assert free_bytes(tmp_path / "runs" / "new" / "checkpoints") == 5000
    assert asked == [tmp_path.resolve()]


def test_bytes_under_counts_files_below_and_a_missing_folder_as_zero(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one").write_bytes(b"x" * 100)
    (tmp_path / "a" / "b" / "two").write_bytes(b"x" * 23)
    assert bytes_under(tmp_path / "a") == 123
    assert bytes_under(tmp_path / "missing") == 0


def test_a_shortfall_names_the_place_both_sizes_and_the_remedy(tmp_path, monkeypatch):
    _free(monkeypatch, 3 << 30)
    require_free(tmp_path, 3 << 30, "the shards", "free space")  # exactly enough is enough
    with pytest.raises(NotEnoughDiskSpace) as caught:
        require_free(tmp_path, 4 << 30, "the shards", "free space or write elsewhere")
    message = str(caught.value)
    assert str(tmp_path) in message and "the shards" in message
    assert "needs 4.0 GiB more than is there now, and 3.0 GiB is free" in message
    assert message.endswith("free space or write elsewhere")
    with pytest.raises(NotEnoughDiskSpace, match="needs 3,221,225,473 bytes more .* and 3,221,225,472 bytes are"):
        require_free(tmp_path, (3 << 30) + 1, "the shards", "free space")  # sizes that would round alike
    assert isinstance(caught.value, UserFacingError)


def test_nothing_to_write_never_asks_the_disk(tmp_path, monkeypatch):
    asked: list = []
    _free(monkeypatch, 0, asked)
    require_free(tmp_path, 0, "nothing", "nothing")
    require_free(tmp_path, -5, "less than there is", "nothing")
    assert asked == []


@pytest.mark.parametrize(
    ("count", "words"),
    [
        (12, "12 bytes"),
        (18 << 10, "18.0 KiB"),
        (int(340.2 * (1 << 20)), "340.2 MiB"),
        (int(12.1 * (1 << 30)), "12.1 GiB"),
    ],
)
def test_sizes_read_at_a_human_scale(count, words):
    assert size_in_words(count) == words

"""Image paths: checked up front, numbered per prompt, and a default path never written over an earlier image."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

import components.inference.image_files as image_files
from components.inference import InferenceError, check_image_path, free_name, numbered, save_image


def test_numbered_names_share_the_chosen_name():
    assert numbered(Path("a/qwen.png"), 0, 1).name == "qwen.png"
    assert [numbered(Path("qwen.png"), i, 3).name for i in range(3)] == [
        "qwen_01.png",
        "qwen_02.png",
        "qwen_03.png",
    ]


def test_free_name_skips_any_name_with_a_file_of_the_render(tmp_path):
    assert free_name(tmp_path / "qwen.png", 2) == tmp_path / "qwen.png"
    (tmp_path / "qwen_02.png").write_bytes(b"")
    assert free_name(tmp_path / "qwen.png", 2) == tmp_path / "qwen-1.png"
    assert free_name(tmp_path / "qwen.png", 1) == tmp_path / "qwen.png"


def test_a_file_that_appeared_since_the_name_was_chosen_is_kept(tmp_path):
    image = Image.new("RGB", (16, 16), "red")
    (tmp_path / "qwen.png").write_bytes(b"another render")
    assert save_image(image, tmp_path / "qwen.png", overwrite=False) == tmp_path / "qwen-1.png"
    assert (tmp_path / "qwen.png").read_bytes() == b"another render"
    assert Image.open(tmp_path / "qwen-1.png").size == (16, 16)
    assert save_image(image, tmp_path / "qwen.png", overwrite=True) == tmp_path / "qwen.png"
    assert Image.open(tmp_path / "qwen.png").format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qwen-1.png", "qwen.png"], "no temporary left"


def test_an_image_that_could_not_be_written_leaves_no_file_under_its_name(tmp_path, monkeypatch):
    import errno

    image = Image.new("RGB", (16, 16), "red")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_image(image, tmp_path / "qwen.png", overwrite=False)
    assert list(tmp_path.iterdir()) == []


def test_while_an_image_is_written_nothing_is_under_its_name_so_a_kill_leaves_no_cut_off_image(tmp_path, monkeypatch):
    """A SIGKILL (or the OOM killer) mid-save left a truncated PNG under the final name, taken for a render."""
    import errno
    import os

    image, real_save, seen = Image.new("RGB", (16, 16), "red"), Image.Image.save, []

    def save(self, target, *args, **kwargs):
        seen.append(sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")))
        return real_save(self, target, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save)
    assert save_image(image, tmp_path / "qwen.png", overwrite=False) == tmp_path / "qwen.png"
    assert seen == [[]] and Image.open(tmp_path / "qwen.png").size == (16, 16)

    def no_links(*args):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)  # a file system without hard links: claimed, then moved onto
    assert save_image(image, tmp_path / "qwen.png", overwrite=False) == tmp_path / "qwen-1.png"
    assert Image.open(tmp_path / "qwen-1.png").size == (16, 16)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["qwen-1.png", "qwen.png"], "no temporary left"


def test_check_image_path(tmp_path, monkeypatch):
    check_image_path(tmp_path / "new" / "a.WEBP")
    assert not (tmp_path / "new").exists(), "nothing is made before the render"
    with pytest.raises(InferenceError, match=r"--out .*a\.gif: the file name must end in \.png, \.jpg, \.jpeg, \.webp"):
        check_image_path(tmp_path / "a.gif")
    (tmp_path / "d.png").mkdir()
    with pytest.raises(InferenceError, match="is a directory"):
        check_image_path(tmp_path / "d.png")

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(image_files.tempfile, "TemporaryFile", read_only)
    with pytest.raises(InferenceError, match=r"--out .*b\.png: cannot write to .* \(Permission denied\)"):
        check_image_path(tmp_path / "b.png")

"""fastuda._io.atomic_write, the one way fastuda writes a file: old or new content, never torn;
no temporary left behind; the fsyncs a checkpoint needs."""

import os

import pytest

from fastuda import _io


def test_replaces_whole_and_leaves_nothing(tmp_path):
    path = tmp_path / "sub" / "a.txt"  # the parent folder is made
    _io.write_text(path, "first")
    _io.write_text(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_a_failed_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")

    def half_then_fail(tmp):
        tmp.write_text("ne")
        raise KeyboardInterrupt  # a Ctrl-C mid-write, not only an Exception

    with pytest.raises(KeyboardInterrupt):
        _io.atomic_write(path, half_then_fail)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["a.txt"]


def test_durable_fsyncs_file_then_folder(tmp_path, monkeypatch):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.path.realpath(f"/proc/self/fd/{fd}")) or real(fd))
    path = tmp_path / "latest.pt"
    _io.write_text(path, "x")
    assert synced == []
    _io.write_text(path, "y", durable=True)
    assert synced == [str(_io.temporary_name(path)), str(tmp_path)]  # the bytes before the rename, the entry after


def test_stale_temporary_of_this_pid_is_replaced(tmp_path):
    path = tmp_path / "a.txt"
    _io.temporary_name(path).write_text("torn")  # a killed earlier write by a process of the same pid
    _io.write_text(path, "new")
    assert os.listdir(tmp_path) == ["a.txt"] and path.read_text() == "new"


def test_folder(tmp_path):
    def fill(tmp):
        (tmp / "config.json").write_text("{}")

    target = tmp_path / "export"
    target.mkdir()  # an empty folder is replaced
    _io.atomic_write(target, fill, folder=True)
    assert os.listdir(target) == ["config.json"] and os.listdir(tmp_path) == ["export"]

    def fail(tmp):
        (tmp / "half").write_text("")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _io.atomic_write(tmp_path / "other", fail, folder=True)
    assert os.listdir(tmp_path) == ["export"]

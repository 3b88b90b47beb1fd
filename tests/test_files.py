"""xpnn.files.atomic_write, the one atomic writer behind checkpoints, histories, plots, IDX files and
downloads: the target is replaced whole, keeps the usual permissions, and any exception (Ctrl-C
included) leaves the previous file and no temporary file."""

import os
import sys

import pytest

from xpnn.files import atomic_write, write_json


def _names(directory):
    return sorted(p.name for p in directory.iterdir())


def test_replaces_the_target_and_leaves_nothing_else(tmp_path):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with atomic_write(path) as f:
        f.write(b"new")
        assert path.read_bytes() == b"old", "the target must not change before the write completes"
    assert path.read_bytes() == b"new" and _names(tmp_path) == ["out.bin"]


def test_text_mode_and_a_relative_path(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_json("history.json", {"loss": [0.5]})
    assert (tmp_path / "history.json").read_text() == '{\n  "loss": [\n    0.5\n  ]\n}\n'
    assert _names(tmp_path) == ["history.json"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_the_file_gets_the_umask_permissions_not_mkstemps_0600(tmp_path):
    mask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "f") as f:
            f.write(b"x")
    finally:
        os.umask(mask)
    assert (tmp_path / "f").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError, ValueError])
def test_an_exception_keeps_the_previous_file_and_removes_the_temporary_one(tmp_path, exc):
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(exc):
        with atomic_write(path) as f:
            f.write(b"half")
            raise exc("interrupted")
    assert path.read_bytes() == b"old" and _names(tmp_path) == ["out.bin"]


def test_a_failed_first_write_creates_nothing(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "new.bin") as f:
            f.write(b"half")
            raise KeyboardInterrupt
    assert _names(tmp_path) == []

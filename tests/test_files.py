"""xpnn.files.atomic_write, the one atomic writer behind checkpoints, histories, plots, IDX files and
downloads: the target is replaced whole, keeps the usual permissions, and any exception (Ctrl-C
included) leaves the previous file and no temporary file."""

import os
import signal
import sys

import pytest

from xpnn.files import atomic_write, signals_held, stale_temporaries, write_json


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


def test_a_signal_during_a_held_write_waits_for_the_write(tmp_path):
    path = tmp_path / "model.npz"
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            with atomic_write(path) as f:
                f.write(b"first half, ")
                signal.raise_signal(signal.SIGINT)
                f.write(b"second half")
    assert path.read_bytes() == b"first half, second half" and _names(tmp_path) == ["model.npz"]


def test_a_second_signal_during_a_held_write_rolls_it_back(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt):
        with signals_held():
            with atomic_write(path) as f:
                signal.raise_signal(signal.SIGINT)
                f.write(b"half")
                signal.raise_signal(signal.SIGINT)
                f.write(b"never written")
    assert path.read_bytes() == b"old" and _names(tmp_path) == ["model.npz"]


def test_signals_held_puts_the_handlers_back(tmp_path):
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    with signals_held():
        pass
    assert {signum: signal.getsignal(signum) for signum in before} == before


def test_stale_temporaries_are_atomic_writes_own_names_only(tmp_path):
    target = tmp_path / "model.npz"
    mine = [".model.npz.k3j_x9a2.tmp", ".model.npz.abcdefgh.tmp"]
    others = [".model.npz.tmp", ".model.npz.ABCDEFGH.tmp", ".model.npz.abcdefghi.tmp", ".history.json.abcdefgh.tmp", "model.npz"]
    for name in mine + others:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".model.npz.folder__.tmp").mkdir()
    assert [p.name for p in stale_temporaries(target)] == sorted(mine)
    with atomic_write(tmp_path / "fresh.bin"):
        live = stale_temporaries(tmp_path / "fresh.bin")
    assert len(live) == 1 and live[0].name.startswith(".fresh.bin.") and not live[0].exists()

"""Atomic file writes, shared by checkpoints, histories, plots, IDX files and downloads: a temporary
file in the target's directory, flushed and fsynced, then ``os.replace``d over the target, so readers
see the old file or the new one, never half of one, and an interrupted write leaves nothing behind."""

import contextlib
import json
import os
import re
import signal
import tempfile
import threading
from pathlib import Path

HELD_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM") if hasattr(signal, name))


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces ``path``,
    on any exception (KeyboardInterrupt included) it is removed and ``path`` is left untouched."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=_temporary_prefix(path), suffix=_TEMPORARY_SUFFIX)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        with open(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


_TEMPORARY_SUFFIX = ".tmp"


def _temporary_prefix(path):
    return f".{Path(path).name}."


def stale_temporaries(path):
    """The temporary files :func:`atomic_write` left beside ``path`` when its process was killed
    mid-write (``.model.npz.k3j_x9a2.tmp``): only names of exactly that form, nothing else."""
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    pattern = re.compile(re.escape(_temporary_prefix(path)) + r"[a-z0-9_]{8}" + re.escape(_TEMPORARY_SUFFIX))
    try:
        entries = list(directory.iterdir())
    except OSError:
        return []
    return sorted(entry for entry in entries if pattern.fullmatch(entry.name) and entry.is_file() and not entry.is_symlink())


@contextlib.contextmanager
def signals_held():
    """Hold SIGINT and SIGTERM until the block ends, then deliver them: a write inside the block
    finishes before Ctrl-C or a polite kill takes effect, so it is never cut half-way (zipfile, for
    one, cannot be closed cleanly after an interrupt mid-entry). A second signal of the same kind
    while one is held is not held: it is delivered at once, and the block unwinds (an
    :func:`atomic_write` inside rolls back). Outside the main thread signals cannot be caught
    there, so the block runs as is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {}

    def hold(signum, frame):
        if signum in held:
            signal.signal(signum, previous[signum])
            signal.raise_signal(signum)
            return
        held.append(signum)

    for signum in HELD_SIGNALS:
        previous[signum] = signal.signal(signum, hold)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        for signum in held:
            signal.raise_signal(signum)


@contextlib.contextmanager
def folder_made_for(directory):
    """Create ``directory`` (and missing parents) for the block; if the block raises, remove the
    folders it created that are still empty, so a failed download or write leaves no trace."""
    directory = Path(directory)
    created = []
    for folder in (directory, *directory.parents):
        if folder.exists():
            break
        created.append(folder)
    directory.mkdir(parents=True, exist_ok=True)
    try:
        yield directory
    except BaseException:
        for folder in created:
            try:
                folder.rmdir()
            except OSError:  # not empty, or not ours to remove
                break
        raise


def _umask():
    """The process umask; Python can read it only by setting it, so it is set back at once."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_directory(directory):
    """Make the rename itself durable where the platform allows it (POSIX)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json(path, obj):
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")

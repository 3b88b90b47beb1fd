"""Reading a zip of ``.npy`` entries (an ``.npz`` file) that may be hostile, with bounded work.

numpy.load trusts its file: it waits on a FIFO, reads headers of any size and decompresses an
entry before anyone has looked at its shape. A checkpoint is input (issue 14), so its container is
read here step by step instead: only a regular file, opened without blocking; the zip directory,
each entry stored or deflated, unencrypted and named ``*.npy``; each entry's ``.npy`` header by
reads of known length (:func:`read_header`); an array only when asked for one, into an array of
the header's shape and dtype, which the zip layer fills up to the entry's declared size
(:func:`read_array`). What the entries mean, and which dtypes they may have, is the caller's
business (``checkpoint.py``); the errors are :class:`CheckpointError`, worded for checkpoints,
this module's one reader.
"""

import io
import math
import os
import stat
import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import CheckpointError

NPY = ".npy"
MAX_HEADER_BYTES = 10_000  # numpy.lib.format's own limit on a .npy header
_CHUNK = 2**20
# What zipfile and zlib raise for a damaged archive (CheckpointError is a ValueError too: callers
# re-raise it before this tuple is tried).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error, OverflowError)


@dataclass(frozen=True)
class Entry:
    """An array entry of the archive, known from its zip directory record and ``.npy`` header only."""

    name: str
    info: zipfile.ZipInfo
    header_size: int
    shape: tuple
    dtype: np.dtype
    fortran: bool

    @property
    def nbytes(self):
        return math.prod(self.shape) * self.dtype.itemsize


# ---- the file and its zip archive ----------------------------------------------------------------


def open_regular(path):
    """Open ``path`` for reading if it is a regular file. The open does not block (a FIFO would
    wait for a writer) and anything but a regular file is refused (a FIFO or device never ends)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError as exc:
        raise CheckpointError(f"checkpoint {path} does not exist") from exc
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    mode = os.fstat(fd).st_mode
    if stat.S_ISREG(mode):
        return os.fdopen(fd, "rb")
    os.close(fd)
    if stat.S_ISDIR(mode):
        raise CheckpointError(f"checkpoint {path} is a directory, expected a .npz file (e.g. {path / 'model.npz'})")
    raise CheckpointError(f"checkpoint {path} is {_file_kind(mode)}, expected a regular .npz file")


def _file_kind(mode):
    kinds = [(stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")]
    return next((name for test, name in kinds if test(mode)), "not a regular file")


def identity(f):
    """What tells this file from a later one at the same path (device, inode, size, mtime)."""
    st = os.fstat(f.fileno())
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def check_magic(f, path):
    """Refuse an empty file, a single ``.npy`` array and anything but a zip archive, by their
    first bytes."""
    magic = f.read(6)
    f.seek(0)
    if not magic:
        raise CheckpointError(f"cannot read checkpoint {path}: it is empty")
    if magic == b"\x93NUMPY":
        raise CheckpointError(f"cannot read checkpoint {path}: it holds a single array (.npy), not an xpnn checkpoint (.npz)")
    if magic[:2] != b"PK":
        raise CheckpointError(f"cannot read checkpoint {path}: it is not an .npz (zip) archive")


def open_zip(f, path):
    try:
        return zipfile.ZipFile(f)
    except _ZIP_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path, exc):
    return CheckpointError(f"cannot read checkpoint {path}: not a valid .npz file, or truncated ({type(exc).__name__}: {exc})")


def directory(archive, path):
    """The archive's entries by name: each once, a ``.npy`` file, stored or deflated, unencrypted."""
    infos = {}
    for info in archive.infolist():
        if info.filename in infos:
            raise CheckpointError(f"checkpoint {path} is corrupt: entry {info.filename!r} appears twice")
        if not info.filename.endswith(NPY):
            raise CheckpointError(f"checkpoint {path} is corrupt: unknown entry {info.filename!r} (expected .npy arrays only)")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 1:
            raise CheckpointError(f"checkpoint {path}: entry {info.filename!r} is encrypted or uses compression method {info.compress_type}; expected stored or deflated")
        infos[info.filename] = info
    return infos


# ---- .npy headers --------------------------------------------------------------------------------


def read_header(archive, info, name, path):
    """The :class:`Entry` of one zip entry, from its ``.npy`` header read with bounded reads. Its
    dtype is not judged here (the caller knows which dtypes it takes) and its declared size not
    yet checked: call :func:`check_size` before reading the entry's data."""
    try:
        with archive.open(info) as stream:
            raw = _read_exactly(stream, 8, name, path)
            if raw[:6] != b"\x93NUMPY" or (raw[6], raw[7]) not in ((1, 0), (2, 0)):
                raise CheckpointError(f"checkpoint {path} is corrupt: entry {name!r} is not a .npy array of format 1.0 or 2.0 (it starts {raw!r})")
            size_field = _read_exactly(stream, 2 if raw[6] == 1 else 4, name, path)
            length = int.from_bytes(size_field, "little")
            if length > MAX_HEADER_BYTES:
                raise CheckpointError(f"checkpoint {path} is corrupt: entry {name!r} has a {length:,}-byte .npy header, expected at most {MAX_HEADER_BYTES:,}")
            header = raw + size_field + _read_exactly(stream, length, name, path)
    except CheckpointError:
        raise
    except _ZIP_ERRORS as exc:
        raise _unreadable(path, exc) from exc
    shape, fortran, dtype = _parse_header(header, name, path)
    return Entry(name, info, len(header), shape, dtype, fortran)


def _parse_header(header, name, path):
    buffer = io.BytesIO(header)
    version = np.lib.format.read_magic(buffer)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    try:
        shape, fortran, dtype = read(buffer, max_header_size=MAX_HEADER_BYTES)
    except (ValueError, TypeError, SyntaxError, RecursionError) as exc:  # what NumPy's header parser raises
        raise CheckpointError(f"checkpoint {path} is corrupt: entry {name!r} has a malformed .npy header ({type(exc).__name__}: {str(exc)[:80]})") from exc
    if any(type(n) is not int or n < 0 for n in shape) or len(shape) > 32:
        raise CheckpointError(f"checkpoint {path} is corrupt: entry {name!r} has shape {shape}, expected at most 32 non-negative sizes")
    return tuple(shape), fortran, dtype


def check_size(entry, path):
    """The entry's size in the zip directory must be its header's plus its array's bytes, so
    that reading it is bounded by its header."""
    declared = entry.info.file_size
    if declared != entry.header_size + entry.nbytes:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: entry {entry.name!r} declares {declared:,} bytes in the zip directory, "
            f"but its header (shape {entry.shape}, {entry.dtype}) implies {entry.header_size + entry.nbytes:,}"
        )


# ---- the entries' data ---------------------------------------------------------------------------


def _read_exactly(stream, size, name, path):
    data = stream.read(size)
    if len(data) != size:
        raise CheckpointError(f"checkpoint {path} is truncated: entry {name!r} ends after {len(data)} of {size} bytes")
    return data


def read_string(archive, entry, path):
    """The string held by a checked 0-d unicode entry."""
    try:
        with archive.open(entry.info) as stream:
            data = _read_exactly(stream, entry.header_size + entry.nbytes, entry.name, path)[entry.header_size :]
        return str(np.frombuffer(data, entry.dtype, count=1)[0])
    except CheckpointError:
        raise
    except _ZIP_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def read_array(archive, entry, path):
    """Decompress one checked entry into a new writable array; the zip layer stops at the
    entry's declared size and checks its CRC."""
    array = np.empty(entry.shape, entry.dtype, order="F" if entry.fortran else "C")
    try:
        with archive.open(entry.info) as stream:
            _read_exactly(stream, entry.header_size, entry.name, path)
            if entry.nbytes:
                _fill(stream, memoryview(array.T if entry.fortran else array).cast("B"), entry.name, path)
    except CheckpointError:
        raise
    except _ZIP_ERRORS as exc:
        raise _unreadable(path, exc) from exc
    return array


def _fill(stream, buffer, name, path):
    done = 0
    while done < len(buffer):
        count = stream.readinto(buffer[done : done + _CHUNK])
        if not count:
            raise CheckpointError(f"checkpoint {path} is truncated: entry {name!r} ends after {done} of {len(buffer)} bytes")
        done += count

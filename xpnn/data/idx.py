"""Read and write IDX files (the MNIST format), raw or gzip-compressed, checking every header field.

The format: two zero bytes, a dtype code, the number of dimensions, one big-endian uint32 per
dimension, then the values in C order, big-endian.
"""

import gzip
import math
import os
import stat
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError, DTypeError
from ..files import atomic_write

DTYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
CODES = {dtype.newbyteorder("=").name: code for code, dtype in DTYPES.items()}
GZIP_MAGIC = b"\x1f\x8b"
MAX_BYTES = 1 << 31  # the data size no IDX header may declare, whatever the caller expects (2 GiB)
CHUNK = 1 << 16


def open_regular(path, what="IDX file"):
    """Open ``path`` for reading, refusing anything but a regular file: a FIFO or a device would block
    or never end. The open is non-blocking, so a FIFO with no writer is found here, not waited on.
    ``what`` names the expected kind of file in the errors."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise DataError(f"{path.name}: expected a readable {what}, found {(exc.strerror or str(exc)).lower()} ({path})") from exc
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DataError(f"{path.name}: expected a regular {what}, found {_kind(mode)} ({path})")
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return open(fd, "rb")


def _kind(mode):
    """What a non-regular file is, in words."""
    kinds = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
             (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))
    return next((text for test, text in kinds if test(mode)), "not a regular file")


def _read_up_to(stream, size):
    """At most ``size`` bytes of ``stream``, read in bounded chunks, so memory grows only with the bytes
    that actually arrive, never with what a damaged header claims."""
    data = bytearray()
    while len(data) < size:
        part = stream.read(min(size - len(data), CHUNK))
        if not part:
            break
        data += part
    return data


def _shape_text(dims):
    return "x".join(str(d) for d in dims)


def _header(stream, name, where):
    """Read and check the header: (numpy dtype, dims). ``where`` says whether the bytes were gunzipped."""
    head = _read_up_to(stream, 4)
    if len(head) < 4:
        raise DataError(f"{name}: truncated: expected a 4-byte IDX header{where}, found {len(head)} bytes")
    if head[0] != 0 or head[1] != 0:
        hint = "; not a gzip stream either" if name.endswith(".gz") and not where else ""
        raise DataError(f"{name}: not an IDX file: expected magic bytes 00 00{where}, found {head[:2].hex(' ')}{hint}")
    code, rank = head[2], head[3]
    if code not in DTYPES:
        known = ", ".join(f"0x{c:02X} ({d.name})" for c, d in DTYPES.items())
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02X}; expected one of {known}")
    dims_bytes = _read_up_to(stream, 4 * rank)
    if len(dims_bytes) < 4 * rank:
        raise DataError(f"{name}: truncated: header of {rank} dimensions needs {4 + 4 * rank} bytes, found {4 + len(dims_bytes)}")
    dims = tuple(int.from_bytes(dims_bytes[4 * i : 4 * i + 4], "big") for i in range(rank))
    return DTYPES[code], dims


def _check_header(name, file_dtype, dims, ndim, dtype, max_dims, max_bytes):
    """Compare the header with what the caller expects; returns the declared data size in bytes.
    Runs before any data is read, so a header that declares too much costs nothing."""
    if ndim is not None and len(dims) != ndim:
        raise DataError(f"{name}: expected {ndim} dimension(s), found {len(dims)} ({_shape_text(dims)})")
    if dtype is not None and file_dtype.newbyteorder("=") != np.dtype(dtype):
        raise DataError(f"{name}: expected dtype {np.dtype(dtype).name}, found {file_dtype.name}")
    if max_dims is not None and any(d > m for d, m in zip(dims, max_dims)):
        raise DataError(f"{name}: header says {_shape_text(dims)}; expected at most {_shape_text(max_dims)}")
    size = math.prod(dims) * file_dtype.itemsize
    if size > max_bytes:
        raise DataError(f"{name}: header says {_shape_text(dims)} = {size} bytes of data; expected at most {max_bytes} bytes")
    return size


def _data_size_error(name, dims, expected, found):
    problem = "truncated" if found < expected else f"{found - expected} trailing bytes"
    return DataError(f"{name}: {problem}: header says {_shape_text(dims)} = {expected} bytes of data, found {found}")


def _read_raw(f, name, checks):
    """Header and data of an uncompressed file, whose size is known before the data is read."""
    file_dtype, dims = _header(f, name, "")
    expected = _check_header(name, file_dtype, dims, *checks)
    found = os.fstat(f.fileno()).st_size - f.tell()
    if found != expected:
        raise _data_size_error(name, dims, expected, found)
    return file_dtype, dims, _read_up_to(f, expected)


def _read_gzip(f, name, checks):
    """Header and data of a gzip file: decompressed up to the declared size plus one byte, so a stream
    longer than its header says is found without decompressing the rest."""
    where = " after gunzip"
    try:
        with gzip.GzipFile(fileobj=f) as stream:
            file_dtype, dims = _header(stream, name, where)
            expected = _check_header(name, file_dtype, dims, *checks)
            data = _read_up_to(stream, expected + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{name}: corrupt gzip stream ({exc}); delete the file and download it again") from exc
    if len(data) > expected:
        raise DataError(
            f"{name}: the gzip stream holds more than its header says: header says {_shape_text(dims)} = {expected} bytes of data, "
            f"found more; delete the file and download it again"
        )
    if len(data) < expected:
        raise _data_size_error(name, dims, expected, len(data))
    return file_dtype, dims, data


def read_idx(path, *, ndim=None, dtype=None, max_dims=None, max_bytes=MAX_BYTES):
    """Read an IDX file (gzip-compressed when it starts with the gzip magic, whatever its name) into a
    NumPy array in native byte order.

    ``ndim`` and ``dtype``, when given, are what the caller expects (a labels file is 1-d uint8);
    ``max_dims`` caps each dimension (a dataset's known image count and shape) and ``max_bytes`` the
    declared data size. Every limit is checked against the header before the data is read, and no
    more than the declared size plus one byte is ever decompressed. Any mismatch, damage or a path
    that is not a regular file raises :class:`~xpnn.errors.DataError` naming the file.
    """
    path = Path(path)
    checks = (ndim, dtype, max_dims, max_bytes)
    with open_regular(path) as f:
        compressed = f.read(2) == GZIP_MAGIC
        f.seek(0)
        read = _read_gzip if compressed else _read_raw
        file_dtype, dims, data = read(f, path.name, checks)
    array = np.frombuffer(data, dtype=file_dtype).reshape(dims)  # writable: data is a bytearray
    return array.astype(file_dtype.newbyteorder("="), copy=False)  # native order; single bytes need no copy


def write_idx(path, array):
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``.

    The write is atomic (:func:`xpnn.files.atomic_write`), so a reader never sees half a file.
    """
    path = Path(path)
    array = np.asarray(array)
    code = CODES.get(array.dtype.name)
    if code is None:
        raise DTypeError(f"write_idx({path.name}): expected dtype {', '.join(CODES)}, got {array.dtype.name}")
    if not 1 <= array.ndim <= 255:
        raise DataError(f"write_idx({path.name}): expected 1 to 255 dimensions, got {array.ndim}")
    header = bytes([0, 0, code, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    payload = header + np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()
    if path.name.endswith(".gz"):
        payload = gzip.compress(payload, mtime=0)
    with atomic_write(path) as f:
        f.write(payload)

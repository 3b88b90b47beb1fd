"""Read and write IDX files (the MNIST format), raw or gzip-compressed, checking every header field.

The format: two zero bytes, a dtype code, the number of dimensions, one big-endian uint32 per
dimension, then the values in C order, big-endian.
"""

import gzip
import math
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


def _read_bytes(path):
    """The file's bytes, decompressed when they start with the gzip magic (whatever the name)."""
    data = path.read_bytes()
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path.name}: corrupt gzip stream ({exc}); delete the file and download it again") from exc


def _shape_text(dims):
    return "x".join(str(d) for d in dims)


def read_idx(path, *, ndim=None, dtype=None):
    """Read an IDX file (``.gz`` or raw) into a NumPy array in native byte order.

    ``ndim`` and ``dtype``, when given, are what the caller expects (a labels file is 1-d uint8);
    any mismatch or damage raises :class:`~xpnn.errors.DataError` naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    name = path.name
    if len(data) < 4:
        raise DataError(f"{name}: truncated: expected a 4-byte IDX header, found {len(data)} bytes")
    if data[0] != 0 or data[1] != 0:
        hint = "; not a gzip stream either" if name.endswith(".gz") else ""
        raise DataError(f"{name}: not an IDX file: expected magic bytes 00 00, found {data[:2].hex(' ')}{hint}")
    code, rank = data[2], data[3]
    if code not in DTYPES:
        known = ", ".join(f"0x{c:02X} ({d.name})" for c, d in DTYPES.items())
        raise DataError(f"{name}: unknown IDX dtype code 0x{code:02X}; expected one of {known}")
    header = 4 + 4 * rank
    if len(data) < header:
        raise DataError(f"{name}: truncated: header of {rank} dimensions needs {header} bytes, found {len(data)}")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(rank))
    file_dtype = DTYPES[code]
    if ndim is not None and rank != ndim:
        raise DataError(f"{name}: expected {ndim} dimension(s), found {rank} ({_shape_text(dims)})")
    if dtype is not None and file_dtype.newbyteorder("=") != np.dtype(dtype):
        raise DataError(f"{name}: expected dtype {np.dtype(dtype).name}, found {file_dtype.name}")
    expected = math.prod(dims) * file_dtype.itemsize
    found = len(data) - header
    if found != expected:
        problem = "truncated" if found < expected else f"{found - expected} trailing bytes"
        raise DataError(f"{name}: {problem}: header says {_shape_text(dims)} = {expected} bytes of data, found {found}")
    array = np.frombuffer(data, dtype=file_dtype, offset=header).reshape(dims)
    return array.astype(file_dtype.newbyteorder("="))  # a writable, native-order copy


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

"""Property-based tests of the IDX reader: random bytes and damaged copies of small valid files, raw
and gzipped, must load or raise an xpnn error, never another exception, and never take memory in
proportion to what a damaged header claims. Derandomized, so every run tries the same ~200 cases."""

import gzip
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xpnn.data import read_idx
from xpnn.data.idx import CODES, DTYPES
from xpnn.errors import XpnnError

FUZZ = settings(max_examples=70, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
MEMORY_SLACK = 1 << 20  # the reader's own chunks and the array; deflate expands at most ~1032:1 on top


def _idx(array):
    """The IDX bytes of ``array`` (what write_idx writes, built in memory)."""
    file_dtype = DTYPES[CODES[array.dtype.name]]
    header = bytes([0, 0, CODES[array.dtype.name], array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(file_dtype).tobytes()


VALID = [
    _idx(np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)),
    _idx(np.arange(7, dtype=np.uint8)),
    _idx(np.arange(-3, 3, dtype=np.int16).reshape(2, 3)),
    _idx(np.linspace(-1, 1, 4).astype(np.float32)),
    _idx(np.eye(2)),
]


@st.composite
def _mutated(draw, base):
    """``base`` after a few random edits: bit flips, truncations, insertions and header dimension changes."""
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "truncate", "insert", "dimension"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "dimension" and len(data) >= 4 and data[3]:
            field = 4 + 4 * draw(st.integers(0, data[3] - 1))
            data[field : field + 4] = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    return bytes(data)


def _read_bounded(path, data):
    """Read ``data`` from ``path`` as an IDX file: an array or an XpnnError, within bounded memory."""
    path.write_bytes(data)
    tracemalloc.start()
    try:
        read_idx(path)
    except XpnnError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < MEMORY_SLACK + 1100 * len(data), f"{peak} bytes to read a {len(data)}-byte file"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@FUZZ
@given(data=st.one_of(st.binary(max_size=64), st.builds(lambda code, rank, rest: bytes([0, 0, code, rank]) + rest,
                                                          st.sampled_from(sorted(DTYPES)), st.integers(0, 4), st.binary(max_size=48))),
       gz=st.booleans())
def test_random_bytes(folder, data, gz):
    _read_bounded(folder / "random.gz", gzip.compress(data, mtime=0) if gz else data)


@FUZZ
@given(data=st.sampled_from(VALID).flatmap(_mutated))
def test_mutated_raw_files(folder, data):
    _read_bounded(folder / "raw-idx3-ubyte", data)


@FUZZ
@given(base=st.sampled_from(VALID), before=st.booleans(), seed=st.data())
def test_mutated_gzip_files(folder, base, before, seed):
    """Damage the IDX bytes and then compress them (a valid gzip of a bad file), or damage the gzip itself."""
    if before:
        data = gzip.compress(seed.draw(_mutated(base)), mtime=0)
    else:
        data = seed.draw(_mutated(gzip.compress(base, mtime=0)))
    _read_bounded(folder / "gz-idx3-ubyte.gz", data)

import gzip
import os
import threading

import numpy as np
import pytest

from xpnn.data import read_idx, write_idx
from xpnn import files as files_module
from xpnn.errors import DataError, DTypeError

DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]


def _raw(code, dims, payload):
    return bytes([0, 0, code, len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + payload


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_round_trip(tmp_path, dtype, suffix):
    info = np.iinfo(dtype) if np.dtype(dtype).kind in "iu" else np.finfo(dtype)
    array = np.linspace(info.min / 2, info.max / 2, 2 * 3 * 4).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / f"x-idx3-ubyte{suffix}"
    write_idx(path, array)
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


def test_interrupted_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "labels-idx1-ubyte.gz"
    write_idx(path, np.arange(3, dtype=np.uint8))
    before = path.read_bytes()

    def interrupt(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(files_module.os, "fsync", interrupt)
    with pytest.raises(KeyboardInterrupt):
        write_idx(path, np.arange(5, dtype=np.uint8))
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == [path.name]


def test_big_endian_on_disk(tmp_path):
    write_idx(tmp_path / "a", np.array([1, 258], dtype=np.int16))
    assert (tmp_path / "a").read_bytes() == _raw(0x0B, (2,), b"\x00\x01\x01\x02")


def test_expected_ndim_and_dtype(tmp_path):
    write_idx(tmp_path / "labels", np.arange(10, dtype=np.uint8))
    assert read_idx(tmp_path / "labels", ndim=1, dtype=np.uint8).shape == (10,)
    with pytest.raises(DataError, match=r"labels: expected 3 dimension\(s\), found 1 \(10\)"):
        read_idx(tmp_path / "labels", ndim=3)
    with pytest.raises(DataError, match="labels: expected dtype float32, found uint8"):
        read_idx(tmp_path / "labels", dtype=np.float32)


def test_bad_magic(tmp_path):
    (tmp_path / "f").write_bytes(b"\x01\x00\x08\x01" + (1).to_bytes(4, "big") + b"\x00")
    with pytest.raises(DataError, match="f: not an IDX file: expected magic bytes 00 00, found 01 00"):
        read_idx(tmp_path / "f")


def test_raw_file_named_gz_is_still_checked(tmp_path):
    (tmp_path / "f.gz").write_bytes(b"PK\x03\x04 not gzip")
    with pytest.raises(DataError, match="f.gz: not an IDX file: expected magic bytes 00 00, found 50 4b; not a gzip stream either"):
        read_idx(tmp_path / "f.gz")


def test_unknown_dtype_code(tmp_path):
    (tmp_path / "f").write_bytes(_raw(0x07, (1,), b"\x00"))
    with pytest.raises(DataError, match=r"f: unknown IDX dtype code 0x07; expected one of 0x08 \(uint8\), .*0x0E \(float64\)"):
        read_idx(tmp_path / "f")


def test_short_header(tmp_path):
    (tmp_path / "f").write_bytes(b"\x00\x00")
    with pytest.raises(DataError, match="f: truncated: expected a 4-byte IDX header, found 2 bytes"):
        read_idx(tmp_path / "f")
    (tmp_path / "g").write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big"))
    with pytest.raises(DataError, match="g: truncated: header of 3 dimensions needs 16 bytes, found 8"):
        read_idx(tmp_path / "g")


def test_truncated_data(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(_raw(0x08, (60000, 28, 28), bytes(1000))))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: truncated: header says 60000x28x28 = 47040000 bytes of data, found 1000$"):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    (tmp_path / "f").write_bytes(_raw(0x0C, (2, 2), bytes(16 + 3)))
    with pytest.raises(DataError, match="f: 3 trailing bytes: header says 2x2 = 16 bytes of data, found 19"):
        read_idx(tmp_path / "f")


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_gzip(tmp_path, damage):
    packed = bytearray(gzip.compress(_raw(0x08, (1000,), np.arange(1000).astype(np.uint8).tobytes())))
    if damage == "truncate":
        packed = packed[: len(packed) // 2]
    else:
        packed[-6] ^= 0xFF  # inside the CRC32 trailer
    (tmp_path / "f.gz").write_bytes(bytes(packed))
    with pytest.raises(DataError, match=r"f.gz: corrupt gzip stream \(.+\); delete the file and download it again"):
        read_idx(tmp_path / "f.gz")


def test_write_rejects_unsupported(tmp_path):
    with pytest.raises(DTypeError, match=r"write_idx\(f\): expected dtype uint8, int8, int16, int32, float32, float64, got int64"):
        write_idx(tmp_path / "f", np.zeros(3, dtype=np.int64))
    with pytest.raises(DataError, match=r"write_idx\(f\): expected 1 to 255 dimensions, got 0"):
        write_idx(tmp_path / "f", np.uint8(3))
    assert list(tmp_path.iterdir()) == []


def test_gzip_longer_than_its_header_stops_at_the_declared_size(tmp_path, monkeypatch):
    """A gzip bomb behind a small header: only the declared size plus one byte is ever decompressed."""
    path = tmp_path / "f.gz"
    path.write_bytes(gzip.compress(_raw(0x08, (4,), bytes(4 + 50_000_000)), compresslevel=1))
    read_sizes = []
    original = gzip.GzipFile.read

    def counting_read(self, size=-1):
        read_sizes.append(size)
        return original(self, size)

    monkeypatch.setattr(gzip.GzipFile, "read", counting_read)
    with pytest.raises(DataError, match=r"f.gz: the gzip stream holds more than its header says: header says 4 = 4 bytes of data, found more"):
        read_idx(path)
    assert sum(read_sizes) <= 4 + 4 + 4 + 1


def test_header_larger_than_the_caps_is_refused_before_reading(tmp_path):
    (tmp_path / "images").write_bytes(_raw(0x08, (70000, 28, 28), b""))
    with pytest.raises(DataError, match="images: header says 70000x28x28; expected at most 60000x28x28"):
        read_idx(tmp_path / "images", max_dims=(60000, 28, 28))
    (tmp_path / "huge.gz").write_bytes(gzip.compress(_raw(0x0E, (65535, 65535, 65535), b"")))
    with pytest.raises(DataError, match=r"huge.gz: header says 65535x65535x65535 = \d+ bytes of data; expected at most 2147483648 bytes"):
        read_idx(tmp_path / "huge.gz")
    with pytest.raises(DataError, match="huge.gz: header says 65535x65535x65535 = .* expected at most 100 bytes"):
        read_idx(tmp_path / "huge.gz", max_bytes=100)


def test_bad_magic_inside_a_valid_gzip_is_bad_idx_magic(tmp_path):
    (tmp_path / "f.gz").write_bytes(gzip.compress(b"\x01\x02\x08\x01" + (1).to_bytes(4, "big") + b"\x00"))
    with pytest.raises(DataError) as err:
        read_idx(tmp_path / "f.gz")
    assert str(err.value) == "f.gz: not an IDX file: expected magic bytes 00 00 after gunzip, found 01 02"


@pytest.mark.parametrize("kind", ["fifo", "directory", "missing"])
def test_a_path_that_is_not_a_regular_file(tmp_path, kind):
    path = tmp_path / "t10k-images-idx3-ubyte"
    expected = {"fifo": "expected a regular IDX file, found a FIFO (named pipe)", "directory": "expected a regular IDX file, found a directory",
                "missing": "expected a readable IDX file, found no such file or directory"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    errors = []
    reader = threading.Thread(target=lambda: errors.append(pytest.raises(DataError, read_idx, path)), daemon=True)
    reader.start()
    reader.join(timeout=5)
    if reader.is_alive():  # release a reader blocked on the FIFO before failing
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        pytest.fail("read_idx blocked on a FIFO")
    assert str(errors[0].value) == f"t10k-images-idx3-ubyte: {expected} ({path})"

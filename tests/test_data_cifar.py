"""CIFAR-10 and CIFAR-100 from their binary archives: synthetic archives in the official layout (random
pixels, exact record sizes, the registry told to expect small splits), loaded from the archive, from
the extracted folder and through a download from 127.0.0.1; every kind of damage is an xpnn error."""

import gzip
import hashlib
import os
import tarfile

import numpy as np
import pytest
from data_helpers import cifar_members, isolated_env, serve, small_cifar, tar_gz, tar_member, write_cifar  # noqa: F401 (isolated_env is a fixture)

from xpnn.data import DATASETS, DataLoader, download, load_dataset
from xpnn.data.cifar import read_archive
from xpnn.errors import ConfigError, DataError, MissingDataError

pytestmark = pytest.mark.usefixtures("isolated_env")
NAMES = ["cifar10", "cifar100"]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("form", ["archive", "folder"])
def test_loads_each_split_from_the_archive_or_the_folder(tmp_path, monkeypatch, name, form):
    info = small_cifar(monkeypatch, name, train=10, test=4)
    held = write_cifar(tmp_path / name, info, form)
    for split, train in (("train", True), ("test", False)):
        ds = load_dataset(name, train=train, root=tmp_path, download=False)
        images, labels = held[split]
        assert ds.images.shape == (len(labels), 3, 32, 32) and ds.images.dtype == np.uint8
        np.testing.assert_array_equal(ds.images, images)
        np.testing.assert_array_equal(ds.labels, labels)
        assert ds.classes == DATASETS[name].classes and len(ds.classes) == (10 if name == "cifar10" else 100)
    assert repr(ds) == f"Dataset({name!r}, split='test', 4 images of 32x32 of 3 channels, {len(ds.classes)} classes)"


def test_records_are_decoded_channel_by_channel_row_by_row(tmp_path, monkeypatch):
    """One record written by hand: label, then 1024 R, 1024 G, 1024 B bytes, each row-major."""
    info = small_cifar(monkeypatch, "cifar10", train=5, test=1)
    members, _ = cifar_members(info)
    pixels = np.arange(3072, dtype=np.uint16) % 251
    record = bytes([7]) + pixels.astype(np.uint8).tobytes()
    members[-1] = tar_member("cifar-10-batches-bin/test_batch.bin", record)
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(tar_gz(members))
    ds = load_dataset("cifar10", train=False, root=tmp_path, download=False)
    assert ds.labels.tolist() == [7]
    assert ds.images[0, 1, 2, 3] == (1024 + 2 * 32 + 3) % 251  # green channel, row 2, column 3


def test_cifar100_uses_the_fine_label_and_checks_the_coarse_one(tmp_path, monkeypatch):
    info = small_cifar(monkeypatch, "cifar100", train=2, test=2)
    members, _ = cifar_members(info)
    members[-1] = tar_member("cifar-100-binary/test.bin", bytes([19, 99]) + bytes(3072) + bytes([3, 42]) + bytes(3072))
    (tmp_path / "cifar-100-binary.tar.gz").write_bytes(tar_gz(members))
    assert load_dataset("cifar100", train=False, root=tmp_path, download=False).labels.tolist() == [99, 42]
    members[-1] = tar_member("cifar-100-binary/test.bin", bytes([19, 99]) + bytes(3072) + bytes([20, 42]) + bytes(3072))
    (tmp_path / "cifar-100-binary.tar.gz").write_bytes(tar_gz(members))
    with pytest.raises(DataError, match=r"^test.bin: record 1 has label byte 1 of 2 20; expected 0..19 \(1 record out of range\)$"):
        load_dataset("cifar100", train=False, root=tmp_path, download=False)


def test_arrays_are_normalised_per_channel(tmp_path, monkeypatch):
    info = small_cifar(monkeypatch, "cifar10", train=10, test=4)
    write_cifar(tmp_path, info)
    ds = load_dataset("cifar10", root=tmp_path, download=False)
    x, y = ds.arrays()
    assert x.shape == (10, 3, 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    mean, std = np.array(info.mean).reshape(3, 1, 1), np.array(info.std).reshape(3, 1, 1)
    np.testing.assert_allclose(x, (ds.images / 255 - mean) / std, rtol=1e-5, atol=1e-5)
    raw, _ = ds.arrays(normalize=False)
    np.testing.assert_allclose(raw, ds.images / 255, rtol=1e-6)
    flat, _ = ds.arrays(flatten=True)
    assert flat.shape == (10, 3072)
    np.testing.assert_array_equal(flat, x.reshape(10, -1))
    assert ds.image_shape == (3, 32, 32) and ds.channels == 3
    loader = DataLoader(ds, batch_size=4)
    assert next(iter(loader))[0].shape == (4, 3, 32, 32)


def test_the_registry_describes_the_official_archives():
    ten, hundred = DATASETS["cifar10"], DATASETS["cifar100"]
    assert (ten.image_shape, ten.split_sizes, ten.channels) == ((3, 32, 32), {"train": 50000, "test": 10000}, 3)
    assert ten.records_per_file("train") == ten.records_per_file("test") == 10000
    assert hundred.records_per_file("train") == 50000 and hundred.records.labels == (20, 100)
    assert ten.records.record_size(ten.image_shape) == 3073 and hundred.records.record_size(hundred.image_shape) == 3074
    assert ten.mean == (0.4914, 0.4822, 0.4465) and ten.std == (0.2470, 0.2435, 0.2616)
    assert hundred.mean == (0.5071, 0.4865, 0.4409) and hundred.std == (0.2673, 0.2564, 0.2762)
    assert ten.augment and hundred.augment and not DATASETS["mnist"].augment
    assert hundred.classes[:3] == ("apple", "aquarium_fish", "baby") and hundred.classes[-1] == "worm"


def test_a_split_size_that_is_not_whole_files_is_a_config_error(monkeypatch):
    info = small_cifar(monkeypatch, "cifar10", train=12, test=4)
    with pytest.raises(ConfigError, match=r"cifar10: split_sizes\['train'\] = 12 is not a whole number of records for each of its 5 files"):
        info.records_per_file("train")


# ---- where the files are looked for --------------------------------------------------------------


def test_root_may_be_the_dataset_folder_or_the_extracted_folder(tmp_path, monkeypatch):
    info = small_cifar(monkeypatch, "cifar10")
    held = write_cifar(tmp_path / "cifar10", info, "folder")
    for root in (tmp_path, tmp_path / "cifar10", tmp_path / "cifar10" / "cifar-10-batches-bin"):
        np.testing.assert_array_equal(load_dataset("cifar10", train=False, root=root, download=False).labels, held["test"][1])


def test_the_extracted_folder_wins_over_the_archive_and_an_incomplete_one_does_not(tmp_path, monkeypatch):
    info = small_cifar(monkeypatch, "cifar10")
    from_archive = write_cifar(tmp_path, info, "archive", seed=1)
    from_folder = write_cifar(tmp_path, info, "folder", seed=2)
    np.testing.assert_array_equal(load_dataset("cifar10", root=tmp_path, download=False).images, from_folder["train"][0])
    (tmp_path / "cifar-10-batches-bin" / "data_batch_4.bin").unlink()
    np.testing.assert_array_equal(load_dataset("cifar10", root=tmp_path, download=False).images, from_archive["train"][0])
    np.testing.assert_array_equal(load_dataset("cifar10", train=False, root=tmp_path, download=False).images, from_folder["test"][0])


def test_missing_names_the_archive_and_an_incomplete_folder(tmp_path, monkeypatch):
    info = small_cifar(monkeypatch, "cifar10")
    write_cifar(tmp_path, info, "folder")
    (tmp_path / "cifar-10-batches-bin" / "data_batch_2.bin").unlink()
    monkeypatch.delenv("XPNN_CIFAR10_MIRROR")  # the registry's mirror is named (and not reached: download=False)
    with pytest.raises(MissingDataError) as err:
        load_dataset("cifar10", root=tmp_path, download=False)
    assert str(err.value).startswith(
        f"cifar10: missing cifar-10-binary.tar.gz (download=False; cifar-10-batches-bin in {tmp_path} lacks data_batch_2.bin). "
        f"Put them in {tmp_path} (searched: {tmp_path / 'cifar10'}, {tmp_path}; the archive or its extracted cifar-10-batches-bin folder), "
    )
    assert str(err.value).endswith("get them from https://www.cs.toronto.edu/~kriz/")


@pytest.mark.parametrize("pickled", ["cifar-10-python.tar.gz", "cifar-10-batches-py"])
def test_the_pickle_version_is_refused_by_name(tmp_path, monkeypatch, pickled):
    small_cifar(monkeypatch, "cifar10")
    (tmp_path / "cifar-10-batches-py").mkdir() if pickled.endswith("py") else (tmp_path / pickled).write_bytes(b"\x80\x02}q\x00.")
    for allowed in (False, True):
        with pytest.raises(DataError, match=rf"^cifar10: found {pickled} in {tmp_path}, the Python \(pickle\) version of CIFAR-10, which xpnn never reads"):
            load_dataset("cifar10", root=tmp_path, download=allowed)


def test_a_pickle_archive_under_the_binary_name_is_refused_unread(tmp_path, monkeypatch):
    small_cifar(monkeypatch, "cifar10")
    members = [tar_member("cifar-10-batches-py", kind=tarfile.DIRTYPE), tar_member("cifar-10-batches-py/data_batch_1", b"\x80\x02}q\x00.")]
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(tar_gz(members))
    with pytest.raises(DataError, match=r"^cifar-10-binary.tar.gz: holds cifar-10-batches-py, a member of the Python \(pickle\) version of CIFAR-10 \(cifar-10-python.tar.gz\)"):
        load_dataset("cifar10", root=tmp_path, download=False)


def test_a_pickle_file_in_the_folder_is_named(tmp_path, monkeypatch):
    info = small_cifar(monkeypatch, "cifar10")
    write_cifar(tmp_path, info, "folder")
    (tmp_path / "cifar-10-batches-bin" / "test_batch.bin").write_bytes(b"\x80\x02}q\x00." + bytes(100))
    with pytest.raises(DataError, match=r"^test_batch.bin: truncated: expected 4 records of 3073 bytes = 12292 bytes, found 106 bytes \(it starts like a Python pickle"):
        load_dataset("cifar10", train=False, root=tmp_path, download=False)


# ---- damage: every kind is a DataError naming the file ---------------------------------------------


def _archive(tmp_path, monkeypatch, name="cifar10", edit=None):
    """Write a small archive after ``edit(members)`` changes its member list; returns its path."""
    info = small_cifar(monkeypatch, name)
    members, _ = cifar_members(info)
    if edit:
        edit(members)
    path = tmp_path / info.records.archive
    path.write_bytes(tar_gz(members))
    return path


def _set(index, member):
    def edit(members):
        members[index] = member
    return edit


def _load(tmp_path, train=False):
    return load_dataset("cifar10", train=train, root=tmp_path, download=False)


DAMAGE = [
    ("a truncated record", _set(-1, tar_member("cifar-10-batches-bin/test_batch.bin", bytes(4 * 3073 - 1))),
     r"^cifar-10-binary.tar.gz: member cifar-10-batches-bin/test_batch.bin is truncated: expected 12292 bytes, the tar header says 12291$"),
    ("an extra record", _set(-1, tar_member("cifar-10-batches-bin/test_batch.bin", bytes(5 * 3073))),
     r"member cifar-10-batches-bin/test_batch.bin is 3073 bytes too long: expected 12292 bytes, the tar header says 15365$"),
    ("a wrong size in another split", _set(2, tar_member("cifar-10-batches-bin/data_batch_1.bin", bytes(3073))),
     r"member cifar-10-batches-bin/data_batch_1.bin is truncated: expected 6146 bytes"),
    ("an extra member", lambda m: m.insert(1, tar_member("cifar-10-batches-bin/notes.txt", b"hi")),
     r"^cifar-10-binary.tar.gz: unexpected member 'cifar-10-batches-bin/notes.txt'; expected only cifar-10-batches-bin/ and its files \("),
    ("a path outside the folder", lambda m: m.insert(1, tar_member("../../etc/passwd", b"x")), r"unexpected member '../../etc/passwd'"),
    ("a symlink member", _set(-1, tar_member("cifar-10-batches-bin/test_batch.bin", kind=tarfile.SYMTYPE, linkname="/etc/passwd")),
     r"^cifar-10-binary.tar.gz: member cifar-10-batches-bin/test_batch.bin is a symbolic link; expected a regular file$"),
    ("a hard link member", _set(-1, tar_member("cifar-10-batches-bin/test_batch.bin", kind=tarfile.LNKTYPE, linkname="cifar-10-batches-bin/data_batch_1.bin")),
     r"member cifar-10-batches-bin/test_batch.bin is a hard link; expected a regular file$"),
    ("a device member", _set(-1, tar_member("cifar-10-batches-bin/test_batch.bin", kind=tarfile.CHRTYPE)), r"is a character device; expected a regular file$"),
    ("a FIFO member", _set(-1, tar_member("cifar-10-batches-bin/test_batch.bin", kind=tarfile.FIFOTYPE)), r"is a FIFO; expected a regular file$"),
    ("a duplicate member", lambda m: m.insert(3, m[2]), r"member cifar-10-batches-bin/data_batch_1.bin appears twice; expected each file once$"),
    ("a missing member", lambda m: m.pop(), r"^cifar-10-binary.tar.gz: expected members cifar-10-batches-bin/test_batch.bin, found the archive ending without them"),
    ("a huge text member", _set(1, tar_member("cifar-10-batches-bin/batches.meta.txt", bytes(100), size=2**40)),
     r"member cifar-10-batches-bin/batches.meta.txt is 1099511627776 bytes; expected at most 1048576$"),
    ("a label out of range", _set(-1, tar_member("cifar-10-batches-bin/test_batch.bin", (bytes([3]) + bytes(3072)) * 3 + bytes([10]) + bytes(3072))),
     r"^test_batch.bin: record 3 has label 10; expected 0..9 \(1 record out of range\)$"),
]


@pytest.mark.parametrize("what, edit, message", DAMAGE, ids=[d[0] for d in DAMAGE])
def test_a_damaged_archive_is_a_data_error(tmp_path, monkeypatch, what, edit, message):
    _archive(tmp_path, monkeypatch, edit=edit)
    with pytest.raises(DataError, match=message):
        _load(tmp_path)


def test_a_truncated_archive_is_a_data_error(tmp_path, monkeypatch):
    path = _archive(tmp_path, monkeypatch)
    data = path.read_bytes()
    for cut in (len(data) // 3, len(data) * 2 // 3, 20, 1):
        path.write_bytes(data[:cut])
        with pytest.raises(DataError, match=r"^cifar-10-binary.tar.gz: (corrupt archive|truncated|expected a gzip)"):
            _load(tmp_path)


def test_an_archive_that_is_not_gzip_or_not_tar(tmp_path, monkeypatch):
    path = _archive(tmp_path, monkeypatch)
    path.write_bytes(b"PK\x03\x04 a zip file")
    with pytest.raises(DataError, match=r"^cifar-10-binary.tar.gz: expected a gzip-compressed tar archive \(cifar-10-binary.tar.gz\), found no gzip header"):
        _load(tmp_path)
    path.write_bytes(gzip.compress(b"not a tar file at all" * 100))
    with pytest.raises(DataError, match=r"^cifar-10-binary.tar.gz: corrupt archive \("):
        _load(tmp_path)


def test_a_folder_file_of_the_wrong_size_or_kind(tmp_path, monkeypatch):
    info = small_cifar(monkeypatch, "cifar10")
    write_cifar(tmp_path, info, "folder")
    batch = tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin"
    batch.write_bytes(bytes(2 * 3073 + 5))
    with pytest.raises(DataError, match=rf"^data_batch_3.bin: 5 trailing bytes: expected 2 records of 3073 bytes = 6146 bytes, found 6151 bytes \({batch}\)$"):
        _load(tmp_path, train=True)
    batch.unlink()
    os.mkfifo(batch)
    with pytest.raises(DataError, match=r"^data_batch_3.bin: expected a regular CIFAR-10 binary file, found a FIFO \(named pipe\)"):
        _load(tmp_path, train=True)


def test_a_fifo_in_place_of_the_archive(tmp_path, monkeypatch):
    small_cifar(monkeypatch, "cifar10")
    os.mkfifo(tmp_path / "cifar-10-binary.tar.gz")
    with pytest.raises(DataError, match=r"^cifar-10-binary.tar.gz: expected a regular CIFAR-10 binary archive \(cifar-10-binary.tar.gz\), found a FIFO"):
        _load(tmp_path)


def test_a_header_bomb_is_refused_before_it_is_read(tmp_path, monkeypatch):
    """A pax header whose size claims gigabytes: refused before tarfile reads (or gunzips) it."""
    info = small_cifar(monkeypatch, "cifar10")
    members, _ = cifar_members(info)
    members.insert(0, tar_member("pax", bytes(512), kind=tarfile.XHDTYPE, size=2**33))
    path = tmp_path / "cifar-10-binary.tar.gz"
    path.write_bytes(tar_gz(members))
    with pytest.raises(DataError, match=r"^cifar-10-binary.tar.gz: (a tar header asks for a read of \d+ bytes, expected at most|holds more than)"):
        read_archive(path, info, "test")


def test_reading_stops_once_the_splits_members_are_read(tmp_path, monkeypatch):
    """Members after the split's own are never looked at (nor decompressed): an extra member between
    the train and test files stops the test split only."""
    _archive(tmp_path, monkeypatch, edit=lambda m: m.insert(len(m) - 1, tar_member("cifar-10-batches-bin/between.bin", b"x")))
    assert len(_load(tmp_path, train=True)) == 10
    with pytest.raises(DataError, match="unexpected member 'cifar-10-batches-bin/between.bin'"):
        _load(tmp_path)


# ---- download --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_download_checks_md5_and_loads(tmp_path, monkeypatch, name):
    info = small_cifar(monkeypatch, name)
    held = write_cifar(tmp_path / "served", info)
    with serve(tmp_path / "served") as url:
        monkeypatch.setenv(f"XPNN_{name.upper()}_MIRROR", url)
        ds = load_dataset(name, train=False, root=tmp_path / "data")
    np.testing.assert_array_equal(ds.images, held["test"][0])
    assert [p.name for p in (tmp_path / "data" / name).iterdir()] == [info.records.archive]
    assert len(load_dataset(name, root=tmp_path / "data", download=False)) == 10


def test_download_returns_the_folder_and_fetches_once(tmp_path, monkeypatch):
    info = small_cifar(monkeypatch, "cifar10")
    write_cifar(tmp_path / "served", info)
    with serve(tmp_path / "served") as url:
        monkeypatch.setenv("XPNN_CIFAR10_MIRROR", url)
        assert download("cifar10") == tmp_path / "cache" / "xpnn" / "cifar10"
    assert len(load_dataset("cifar10", train=False, download=False)) == 4


def test_a_wrong_md5_download_is_not_kept(tmp_path, monkeypatch):
    info = small_cifar(monkeypatch, "cifar10")
    write_cifar(tmp_path / "served", info)
    served = tmp_path / "served" / "cifar-10-binary.tar.gz"
    found = hashlib.md5(served.read_bytes()).hexdigest()
    info.md5["cifar-10-binary.tar.gz"] = "0" * 32
    with serve(tmp_path / "served") as url:
        monkeypatch.setenv("XPNN_CIFAR10_MIRROR", url)
        with pytest.raises(DataError, match=f"^cifar-10-binary.tar.gz: checksum mismatch: expected md5 {'0' * 32}, found {found}"):
            load_dataset("cifar10", root=tmp_path / "data")
    assert not (tmp_path / "data").exists(), "the folders made for the download go with it"


def test_a_download_beyond_the_published_size_is_cut(tmp_path, monkeypatch):
    info = small_cifar(monkeypatch, "cifar10")
    write_cifar(tmp_path / "served", info)
    monkeypatch.setitem(info.sizes, "cifar-10-binary.tar.gz", 1000)
    with serve(tmp_path / "served") as url:
        monkeypatch.setenv("XPNN_CIFAR10_MIRROR", url)
        with pytest.raises(DataError, match=r"^cifar-10-binary.tar.gz: expected at most 1000 bytes, found Content-Length"):
            load_dataset("cifar10", root=tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_unreachable_mirror_says_what_to_do(tmp_path, monkeypatch):
    small_cifar(monkeypatch, "cifar100")
    with pytest.raises(MissingDataError) as err:
        load_dataset("cifar100", root=tmp_path)
    message = str(err.value)
    assert message.startswith("cifar100: missing cifar-100-binary.tar.gz and could not be downloaded (http://127.0.0.1:")
    assert "the archive or its extracted cifar-100-binary folder" in message

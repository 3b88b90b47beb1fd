"""Property-based tests of the CIFAR binary readers: damaged copies of a small valid archive (the tar
bytes damaged before compression, or the gzip bytes themselves), random bytes, and damaged batch
files of an extracted folder must load or raise an xpnn error, never another exception, and never
take memory beyond what the registry's sizes allow. Derandomized, so every run tries the same cases."""

import dataclasses
import gzip
import tracemalloc

import pytest
from data_helpers import cifar_members, tar_gz
from test_data_fuzz import _mutated as edited
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xpnn.data import DATASETS
from xpnn.data.cifar import read_archive, read_folder
from xpnn.data.registry import EXTRA_MAX
from xpnn.errors import XpnnError

FUZZ = settings(max_examples=60, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
INFOS = {name: dataclasses.replace(DATASETS[name], split_sizes={"train": 5, "test": 2}) for name in ("cifar10", "cifar100")}
ARCHIVES = {name: tar_gz(cifar_members(info)[0]) for name, info in INFOS.items()}
TARS = {name: gzip.decompress(data) for name, data in ARCHIVES.items()}
# the reader's chunks, the records and the largest text member it may be asked to skip
MEMORY_BOUND = 6 * (1 << 20) + 3 * EXTRA_MAX


@st.composite
def _mutated(draw, base):
    """``base`` after the IDX fuzz's random edits (bit flips, truncations, insertions), and perhaps a
    tar header field (name, size, checksum, type or prefix) overwritten with random bytes."""
    data = bytearray(draw(edited(base)))
    if len(data) > 512 and draw(st.booleans()):
        block = draw(st.integers(0, len(data) // 512 - 1)) * 512
        offset, length = draw(st.sampled_from([(0, 100), (124, 12), (148, 8), (156, 1), (345, 155)]))
        data[block + offset : block + offset + length] = draw(st.binary(min_size=length, max_size=length))
    return bytes(data)


def _read_bounded(call):
    """``call()`` gives arrays or an XpnnError, within bounded memory."""
    tracemalloc.start()
    try:
        call()
    except XpnnError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < MEMORY_BOUND, f"{peak} bytes to read a small archive"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("cifar-fuzz")


def _archive(folder, name, data, split):
    path = folder / INFOS[name].records.archive
    path.write_bytes(data)
    _read_bounded(lambda: read_archive(path, INFOS[name], split))


@FUZZ
@given(name=st.sampled_from(sorted(INFOS)), split=st.sampled_from(["train", "test"]), seed=st.data())
def test_damaged_tar_inside_valid_gzip(folder, name, split, seed):
    _archive(folder, name, gzip.compress(seed.draw(_mutated(TARS[name])), mtime=0), split)


@FUZZ
@given(name=st.sampled_from(sorted(INFOS)), split=st.sampled_from(["train", "test"]), seed=st.data())
def test_damaged_gzip(folder, name, split, seed):
    _archive(folder, name, seed.draw(_mutated(ARCHIVES[name])), split)


@FUZZ
@given(name=st.sampled_from(sorted(INFOS)), data=st.binary(max_size=2048), gz=st.booleans())
def test_random_bytes(folder, name, data, gz):
    _archive(folder, name, gzip.compress(data, mtime=0) if gz else data, "test")


@FUZZ
@given(name=st.sampled_from(sorted(INFOS)), seed=st.data())
def test_damaged_folder_files(folder, name, seed):
    info = INFOS[name]
    members, _ = cifar_members(info)
    target = folder / name / info.records.folder
    target.mkdir(parents=True, exist_ok=True)
    for member, data in members[1:]:
        (folder / name / member.name).write_bytes(data)
    damaged = seed.draw(st.sampled_from(info.records.files["test"]))
    path = target / damaged
    path.write_bytes(seed.draw(_mutated(path.read_bytes())))
    _read_bounded(lambda: read_folder(target, info, "test"))

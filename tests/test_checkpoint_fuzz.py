"""Property-based tests of the checkpoint reader (issue 14): random bytes, mutated bytes of a real
checkpoint, replaced zip entries and mutated metadata values make ``load_checkpoint`` and
``Checkpoint.restore`` into fresh objects raise only ``xpnn.errors`` exceptions (never a KeyError,
a NumPy ValueError, zipfile.BadZipFile or MemoryError). Derandomized and without an example
database, so every run tries the same examples."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_checkpoint import npy_bytes, npz_entries, read_meta, small_checkpoint, small_run, with_meta, write_npz

import xpnn
from xpnn.errors import XpnnError
from xpnn.train import load_checkpoint

FUZZ = dict(deadline=None, derandomize=True, database=None)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=6,
)
DTYPES = ["<f4", "<f8", "<f2", ">f4", "<i8", "|b1", "<c8", "<U2", "|S2", "<f16"]


@pytest.fixture(scope="module", autouse=True)
def keep_global_random_state():
    """Restores write the global generator; give the next test module the state it had."""
    state = xpnn.random.get_rng_state()
    yield
    xpnn.random.set_rng_state(state)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.fixture(scope="module")
def original(workdir):
    """The intact checkpoint that the tests below mutate (never written to)."""
    return small_checkpoint(workdir / "original.npz")


def load_and_restore(path):
    """Load ``path``, restore it into fresh objects and read its arrays: any failure must be an
    XpnnError."""
    try:
        checkpoint = load_checkpoint(path)
        checkpoint.restore(*small_run(seed=1))
    except XpnnError:
        return
    try:
        checkpoint.model_state, checkpoint.optimizer_state
    except XpnnError:
        pass


@settings(max_examples=30, **FUZZ)
@given(prefix=st.sampled_from([b"", b"PK", b"PK\x03\x04", b"PK\x05\x06", b"\x93NUMPY"]), data=st.binary(max_size=400))
def test_random_bytes_give_only_xpnn_errors(workdir, prefix, data):
    path = workdir / "random.npz"
    path.write_bytes(prefix + data)
    load_and_restore(path)


@st.composite
def mutations(draw, size):
    """A list of byte edits: flip a bit, truncate, insert or delete bytes at some offset."""
    edits = []
    for _ in range(draw(st.integers(1, 2))):
        kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete"]))
        at = draw(st.integers(0, size - 1))
        extra = draw(st.binary(min_size=1, max_size=16)) if kind == "insert" else draw(st.integers(0, 7 if kind == "flip" else 64))
        edits.append((kind, at, extra))
    return edits


def mutate(data, edits):
    data = bytearray(data)
    for kind, at, extra in edits:
        at = min(at, max(len(data) - 1, 0))
        if kind == "flip" and data:
            data[at] ^= 1 << extra
        elif kind == "truncate":
            del data[at:]
        elif kind == "insert":
            data[at:at] = extra
        elif kind == "delete":
            del data[at : at + extra + 1]
    return bytes(data)


@settings(max_examples=70, **FUZZ)
@given(data=st.data())
def test_mutated_bytes_of_a_checkpoint_give_only_xpnn_errors(workdir, original, data):
    intact = original.read_bytes()
    path = workdir / "mutated.npz"
    path.write_bytes(mutate(intact, data.draw(mutations(len(intact)))))
    load_and_restore(path)


@st.composite
def arrays(draw):
    """A small array of a dtype a checkpoint may or may not hold."""
    shape = tuple(draw(st.lists(st.integers(0, 9), max_size=3)))
    return np.zeros(shape, draw(st.sampled_from(DTYPES)))


@settings(max_examples=40, **FUZZ)
@given(data=st.data())
def test_replaced_zip_entries_give_only_xpnn_errors(workdir, original, data):
    entries = npz_entries(original)
    name = data.draw(st.sampled_from(sorted(entries)))
    change = data.draw(st.sampled_from(["bytes", "array", "drop", "add"]))
    if change == "bytes":
        entries[name] = data.draw(st.binary(max_size=200))
    elif change == "array":
        entries[name] = npy_bytes(data.draw(arrays()))
    elif change == "drop":
        del entries[name]
    else:
        entries[data.draw(st.text(min_size=1, max_size=8)) + data.draw(st.sampled_from([".npy", ""]))] = npy_bytes(data.draw(arrays()))
    compression = data.draw(st.sampled_from([0, 8]))  # stored, deflated
    load_and_restore(write_npz(workdir / "replaced.npz", entries, compression))


def paths(value, prefix=()):
    """Every place in a JSON value, as a tuple of keys and indices from the root."""
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, prefix + (key,))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from paths(item, prefix + (index,))


@settings(max_examples=70, **FUZZ)
@given(data=st.data())
def test_mutated_metadata_gives_only_xpnn_errors(workdir, original, data):
    entries = npz_entries(original)
    meta = read_meta(entries)
    place = data.draw(st.sampled_from(list(paths(meta))[1:]))
    parent = meta
    for key in place[:-1]:
        parent = parent[key]
    if isinstance(parent, dict) and data.draw(st.booleans()):
        del parent[place[-1]]
    else:
        parent[place[-1]] = data.draw(JSON)
    load_and_restore(write_npz(workdir / "meta.npz", with_meta(entries, meta)))


def test_the_original_restores(original):
    """The intact checkpoint restores, so the properties above test refusals, not a broken fixture."""
    model, opt, sched, loader = small_run(seed=1)
    checkpoint = load_checkpoint(original).restore(model, opt, sched, loader)
    for name, value in checkpoint.model_state.items():
        np.testing.assert_array_equal(model.state_dict()[name], value)

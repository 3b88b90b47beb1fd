import json

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import random as xpnn_random
from xpnn.data import DataLoader
from xpnn.errors import ArgumentTypeError, CheckpointError, ConfigError, ShapeError

N = 23


def _data():
    x = np.arange(N * 3, dtype=np.float32).reshape(N, 3)
    return x, np.arange(N, dtype=np.int64)


def _epoch(loader):
    """The sample indices of one epoch, batch by batch, read back from the yielded y."""
    return [xb.to_numpy(yb).tolist() for _, yb in loader]


def test_plain_batches_are_contiguous_slices():
    x, y = _data()
    loader = DataLoader(x, y, batch_size=5)
    assert (len(loader), loader.batch_size, loader.dataset_size) == (5, 5, N)
    batches = list(loader)
    assert [len(yb) for _, yb in batches] == [5, 5, 5, 5, 3]
    np.testing.assert_array_equal(np.concatenate([xb for xb, _ in batches]), x)
    assert np.shares_memory(batches[0][0], x)  # slices, no gather


def test_drop_last():
    loader = DataLoader(*_data(), batch_size=5, drop_last=True)
    assert len(loader) == 4
    assert [len(b) for b in _epoch(loader)] == [5, 5, 5, 5]
    assert len(DataLoader(*_data(), batch_size=N, drop_last=True)) == 1
    with pytest.raises(ConfigError, match=f"^DataLoader: expected at least one batch, found {N} samples, fewer than batch_size {N + 1}, with drop_last=True$"):
        DataLoader(*_data(), batch_size=N + 1, drop_last=True)


def test_shuffle_covers_each_sample_once_and_changes_every_epoch():
    x, y = _data()
    loader = DataLoader(x, y, batch_size=4, shuffle=True, seed=1)
    epochs = [_epoch(loader) for _ in range(3)]
    for epoch in epochs:
        assert sorted(sum(epoch, [])) == list(range(N))
    assert epochs[0] != epochs[1] != epochs[2]
    for xbatch, ybatch in loader:
        np.testing.assert_array_equal(xbatch, x[ybatch])  # x and y gathered with the same indices


def test_shuffle_is_reproducible_from_the_seed():
    a = DataLoader(*_data(), batch_size=4, shuffle=True, seed=7)
    b = DataLoader(*_data(), batch_size=4, shuffle=True, seed=7)
    c = DataLoader(*_data(), batch_size=4, shuffle=True, seed=8)
    assert [_epoch(a), _epoch(a)] == [_epoch(b), _epoch(b)]
    assert _epoch(a) != _epoch(c)


def test_shuffle_is_drawn_when_the_epoch_starts():
    a = DataLoader(*_data(), batch_size=4, shuffle=True, seed=0)
    b = DataLoader(*_data(), batch_size=4, shuffle=True, seed=0)
    iter(a)  # an epoch started and abandoned before its first batch still uses up its order
    _epoch(b)
    assert _epoch(a) == _epoch(b)


def test_state_dict_resumes_the_same_order():
    uninterrupted = DataLoader(*_data(), batch_size=4, shuffle=True, seed=3)
    expected = [_epoch(uninterrupted) for _ in range(4)]
    first = DataLoader(*_data(), batch_size=4, shuffle=True, seed=3)
    done = [_epoch(first), _epoch(first)]
    state = json.loads(json.dumps(first.state_dict()))
    resumed = DataLoader(*_data(), batch_size=4, shuffle=True, seed=999)
    resumed.load_state_dict(state)
    assert done + [_epoch(resumed), _epoch(resumed)] == expected


@pytest.mark.parametrize("shuffle", [False, True])
def test_batches_live_on_the_device(backend, shuffle):
    x, y = _data()
    loader = DataLoader(x, y, batch_size=5, shuffle=shuffle, seed=0, device=backend.device)
    array = xb.array_type(backend.xp)
    for xbatch, ybatch in loader:
        assert type(xbatch) is array and type(ybatch) is array
        assert xbatch.dtype == backend.xp.float32 and ybatch.dtype == backend.xp.int64
        np.testing.assert_array_equal(xb.to_numpy(xbatch), x[xb.to_numpy(ybatch)])
    assert sorted(sum(_epoch(loader), [])) == list(range(N))
    assert type(DataLoader(x, y, device=backend.xp).x) is array  # a namespace works as well as a string


def test_cpu_device_and_host_lists():
    loader = DataLoader([[1.0], [2.0], [3.0]], [0, 1, 2], batch_size=2, device="cpu")
    (xb, yb), (xb2, _) = list(loader)
    assert isinstance(xb, np.ndarray) and xb.shape == (2, 1) and yb.tolist() == [0, 1] and xb2.shape == (1, 1)


def test_keeps_arrays_on_their_backend():
    xps = pytest.importorskip("array_api_strict")
    x, y = _data()
    loader = DataLoader(xps.asarray(x), xps.asarray(y), batch_size=4)
    assert type(next(iter(loader))[0]) is xb.array_type(xps)


def test_seed_none_follows_xpnn_random():
    saved = xpnn_random.get_rng_state()
    try:
        xpnn_random.manual_seed(5)
        a = _epoch(DataLoader(*_data(), batch_size=4, shuffle=True))
        xpnn_random.manual_seed(5)
        assert _epoch(DataLoader(*_data(), batch_size=4, shuffle=True)) == a
    finally:
        xpnn_random.set_rng_state(saved)


def test_mismatched_lengths():
    with pytest.raises(ShapeError, match=r"DataLoader: expected x and y of the same length, got x of shape \(23, 3\) and y of shape \(22,\)"):
        DataLoader(_data()[0], np.zeros(22))


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, None])
def test_batch_size_must_be_a_positive_int(bad):
    with pytest.raises(ConfigError, match=f"DataLoader: expected batch_size to be a positive int, got {bad!r}"):
        DataLoader(*_data(), batch_size=bad)


def test_an_empty_dataset_is_refused():
    """An empty loader would make an epoch that trains on nothing and divides by zero: it is an error."""
    with pytest.raises(ConfigError, match=r"^DataLoader: expected at least one batch, found an empty dataset \(x of shape \(0, 3\)\)$"):
        DataLoader(np.zeros((0, 3), np.float32), np.zeros(0, np.int64))


def _state(**changes):
    """A valid loader state with some fields of its generator state replaced."""
    state = DataLoader(*_data(), shuffle=True, seed=1).state_dict()
    generator = state["generator"]
    for key, value in changes.items():
        target = generator["state"] if key in ("state", "inc") else generator
        target[key] = value
    return state


@pytest.mark.parametrize(
    "state, message",
    [
        (None, "DataLoader state: expected a dict with the one key 'generator', found NoneType"),
        ({"generator": {}, "epoch": 3}, r"DataLoader state: expected a dict with the one key 'generator', found \['epoch', 'generator'\]"),
        ({"generator": "abc"}, "DataLoader state 'generator': expected a dict with keys bit_generator, has_uint32, state, uinteger, found str"),
        (_state(bit_generator="MT19937"), "DataLoader state 'generator': expected bit_generator 'PCG64', found 'MT19937'"),
        (_state(state=1.5), r"DataLoader state 'generator' state.state: expected an integer in \[0, \d+\), found 1.5"),
        (_state(state=-1), r"state.state: expected an integer in \[0, \d+\), found -1"),
        (_state(inc=2**200 + 1), r"state.inc: expected an integer in \[0, \d+\), found 1606"),
        (_state(inc=4), r"DataLoader state 'generator': expected an odd state.inc \(PCG64 increments are odd\), found 4"),
        (_state(has_uint32=True), r"has_uint32: expected an integer in \[0, 2\), found True"),
        (_state(uinteger="7"), r"uinteger: expected an integer in \[0, 4294967296\), found '7'"),
    ],
)
def test_load_state_dict_refuses_junk_and_changes_nothing(state, message):
    loader = DataLoader(*_data(), batch_size=4, shuffle=True, seed=5)
    before = loader.state_dict()
    with pytest.raises(CheckpointError, match=message):
        loader.load_state_dict(state)
    assert loader.state_dict() == before


# ---- the forms a loader takes, and a readable repr (issue 15) -----------------------------------


def test_a_dataset_or_an_xy_tuple_works_like_x_and_y():
    from xpnn.data import load_dataset

    dataset = load_dataset("digits")
    x, y = dataset.arrays()
    for loader in (DataLoader(dataset, batch_size=100), DataLoader((x, y), batch_size=100), DataLoader(x, y, 100)):
        xb, yb = next(iter(loader))
        assert xb.shape == (100, 1, 8, 8) and xb.dtype == np.float32 and yb.tolist() == y[:100].tolist()
        assert len(loader) == 15 and loader.dataset_size == 1437


def test_repr_names_samples_batches_and_device():
    assert repr(DataLoader(*_data(), batch_size=4, shuffle=True)) == "DataLoader(23 samples, batch_size=4, shuffle=True, 6 batches, device=cpu)"
    assert repr(DataLoader(*_data(), batch_size=64)) == "DataLoader(23 samples, batch_size=64, shuffle=False, 1 batch, device=cpu)"
    assert repr(DataLoader(*_data(), batch_size=4, drop_last=True)) == "DataLoader(23 samples, batch_size=4, shuffle=False, drop_last=True, 5 batches, device=cpu)"
    pytest.importorskip("array_api_strict")
    assert "device=" in repr(DataLoader(*_data(), batch_size=4, device="array_api_strict:device1"))


WRONG_FORMS = [
    ((np.zeros((3, 2)), np.zeros(3), np.zeros(3)), ShapeError,
     r"DataLoader: expected an \(x, y\) tuple of two arrays, found a tuple of 3 items \(shape \(3, 2\), shape \(3,\), shape \(3,\)\)"),
    ((np.zeros(3),), ShapeError, r"DataLoader: expected an \(x, y\) tuple of two arrays, found a tuple of 1 item \(shape \(3,\)\)"),
    ("mnist", ArgumentTypeError,
     r"DataLoader: expected x and y arrays, an \(x, y\) tuple, or a Dataset from xpnn.data.load_dataset, found str 'mnist' \(load a dataset first: xpnn.data.load_dataset\('mnist'\)\)"),
    ({"x": 1, "y": 2}, ArgumentTypeError, r"found dict with keys \['x', 'y'\]; pass \(x, y\)"),
    (7, ArgumentTypeError, r"DataLoader: expected x and y arrays, an \(x, y\) tuple, or a Dataset from xpnn.data.load_dataset, found int 7"),
    (None, ArgumentTypeError, r"found NoneType None"),
    (np.zeros((3, 2)), ArgumentTypeError, r"found only x \(array of shape \(3, 2\)\) and no y; pass \(x, y\)"),
    ([np.zeros((3, 2)), np.zeros(3)], ArgumentTypeError, r"found a list of 2 items; pass a tuple \(x, y\)"),
    ((np.zeros((3, 2)), "labels"), ArgumentTypeError, r"DataLoader: expected y to be an array \(NumPy, CuPy, any Array API array\) or a list, found str 'labels'$"),
    ((np.array(["a", "b"]), np.zeros(2)), ArgumentTypeError, r"DataLoader: expected x of a numeric dtype, found dtype <U1"),
]


@pytest.mark.parametrize("data, kind, message", WRONG_FORMS)
def test_each_wrong_form_names_what_was_expected_and_found(data, kind, message):
    with pytest.raises(kind, match=message):
        DataLoader(data)


def test_y_beside_a_dataset_or_a_tuple_is_refused_with_the_batch_size_hint():
    from xpnn.data import load_dataset

    with pytest.raises(ArgumentTypeError, match=r"DataLoader: expected y only beside an x array, found a Dataset, which holds its own labels, and y = int 64; pass the batch size by name: batch_size=64"):
        DataLoader(load_dataset("digits"), 64)
    with pytest.raises(ArgumentTypeError, match=r"found an \(x, y\) tuple, which holds its own labels, and y = an array of shape \(23,\)$"):
        DataLoader(_data(), _data()[1])


def test_tuple_of_different_lengths_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"DataLoader: expected x and y of the same length, got x of shape \(23, 3\) and y of shape \(5,\)"):
        DataLoader((_data()[0], np.zeros(5)))

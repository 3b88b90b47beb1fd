"""Mini-batches of device arrays: the data is uploaded once, each epoch's shuffle is drawn on the host
(identical on every backend for a seed) and each batch is gathered on the device."""

import numpy as np

from .. import backend
from .. import random as xpnn_random
from ..errors import ArgumentTypeError, CheckpointError, ConfigError, ShapeError

UINT128 = 1 << 128
UINT32 = 1 << 32


class DataLoader:
    """Iterate over ``(xb, yb)`` batches of ``x`` and ``y`` (same length along axis 0) on ``device``.

    The data is ``DataLoader(x, y, ...)``, ``DataLoader((x, y), ...)`` or ``DataLoader(dataset, ...)``
    with a :class:`~xpnn.data.Dataset` from :func:`~xpnn.data.load_dataset` (its ``.arrays()``: images
    (N, 1, H, W), float32, normalised). Any other form is an ArgumentTypeError naming what was found.

    ``device`` is a device string, namespace or device for :func:`xpnn.backend.resolve`; None keeps arrays
    on their own backend (host data goes to NumPy). With ``shuffle``, every ``iter()`` starts a new
    epoch in a new order from a host generator seeded with ``seed`` (None: drawn from
    :func:`xpnn.random.default_generator`, so ``xpnn.random.manual_seed`` makes it reproducible).
    ``len()`` is the number of batches per epoch, as in PyTorch. A loader with no batch to yield (no
    samples, or fewer than ``batch_size`` with ``drop_last``) is a ConfigError at construction, so
    that an epoch never silently does nothing.

    ``transform`` (see :mod:`xpnn.data.transforms`) is applied to each batch of x on the device, for
    training-time augmentation. Its random draws come from a host generator seeded from the shuffle
    generator when each epoch starts (after the epoch's order), so ``state_dict`` saved between
    epochs resumes crops and flips bit for bit, and a loader without a transform draws exactly what
    it did before transforms existed.
    """

    def __init__(self, x, y=None, batch_size=64, shuffle=False, drop_last=False, seed=None, device=None, transform=None):
        x, y = as_arrays(x, y, "DataLoader")
        if transform is not None:
            from .transforms import check_transform

            check_transform(transform, "DataLoader transform")
        self.transform = transform
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"DataLoader: expected batch_size to be a positive int, got {batch_size!r}")
        if device is None and hasattr(x, "__array_namespace__"):
            device = x
        self.xp = backend.resolve(device)
        self.device = backend.resolve_device(device)
        self.x = backend.asarray(x, self.xp, device=self.device)
        self.y = backend.asarray(y, self.xp, device=self.device)
        if self.x.ndim == 0 or self.y.ndim == 0 or self.x.shape[0] != self.y.shape[0]:
            raise ShapeError(
                f"DataLoader: expected x and y of the same length, got x of shape {tuple(self.x.shape)} and y of shape {tuple(self.y.shape)}"
            )
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.drop_last = drop_last
        if len(self) == 0:
            raise ConfigError(f"DataLoader: expected at least one batch, found {self._no_batch_reason()}")
        if seed is None:
            seed = int(xpnn_random.default_generator().integers(2**63))
        self.generator = np.random.default_rng(seed)

    @property
    def dataset_size(self):
        """The number of samples (rows of x)."""
        return self.x.shape[0]

    def __len__(self):
        full, rest = divmod(self.dataset_size, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __repr__(self):
        device = "cpu" if backend.is_numpy(self.xp) else backend.device_name(self.xp)
        if self.device is not None:
            device = f"{device}:{getattr(self.device, 'id', self.device)}" if backend.is_cupy(self.xp) else str(self.device)
        batches = f"{len(self)} batch" + ("" if len(self) == 1 else "es")
        drop = ", drop_last=True" if self.drop_last else ""
        transform = f", transform={self.transform!r}" if self.transform is not None else ""
        return (
            f"DataLoader({self.dataset_size} samples, batch_size={self.batch_size}, shuffle={bool(self.shuffle)}{drop}, {batches}, "
            f"device={device}{transform})"
        )

    def _no_batch_reason(self):
        if self.dataset_size == 0:
            return f"an empty dataset (x of shape {tuple(self.x.shape)})"
        return f"{self.dataset_size} samples, fewer than batch_size {self.batch_size}, with drop_last=True"

    def __iter__(self):
        """Start an epoch: the shuffle, and the seed of the epoch's transform draws, are drawn here,
        when iteration begins, not at the first batch."""
        n, size = self.dataset_size, self.batch_size
        bounds = [(s, min(s + size, n)) for s in range(0, len(self) * size, size)]  # in-bounds stops, as the standard requires
        order = None
        if self.shuffle:
            order = backend.asarray(self.generator.permutation(n), self.xp, device=self.device)
        if self.transform is None:
            return self._slices(bounds) if order is None else self._gather(order, bounds)
        augment = np.random.default_rng(int(self.generator.integers(2**63)))
        batches = self._slices(bounds) if order is None else self._gather(order, bounds)
        return ((self.transform(xb, augment), yb) for xb, yb in batches)

    def shard_batches(self, rank, size):
        """One epoch for rank ``rank`` of ``size`` data-parallel ranks: ``(xb, yb, n)`` with this
        rank's contiguous part of each global batch (``xpnn.distributed.data_parallel.shard_bounds``)
        and the global batch size ``n``. The shuffle and the batches are the ones ``iter()`` would
        draw, so N ranks together see exactly a one-process epoch; only the rank's rows are
        gathered. A transform draws its randomness for the rank's rows only, so augmented batches
        differ from a one-process run's (the order does not)."""
        from ..distributed.data_parallel import shard_bounds

        n, step = self.dataset_size, self.batch_size
        bounds = [(s, min(s + step, n)) for s in range(0, len(self) * step, step)]
        order = backend.asarray(self.generator.permutation(n), self.xp, device=self.device) if self.shuffle else None
        augment = np.random.default_rng(int(self.generator.integers(2**63))) if self.transform is not None else None
        parts = [(a + shard_bounds(b - a, rank, size)[0], a + shard_bounds(b - a, rank, size)[1]) for a, b in bounds]
        batches = self._slices(parts) if order is None else self._gather(order, parts)
        return self._with_sizes(bounds, batches, augment)

    def _with_sizes(self, bounds, batches, augment):
        for (a, b), (xb, yb) in zip(bounds, batches):
            if augment is not None and xb.shape[0]:
                xb = self.transform(xb, augment)
            yield xb, yb, b - a

    def _slices(self, bounds):
        return ((self.x[a:b, ...], self.y[a:b, ...]) for a, b in bounds)

    def _gather(self, order, bounds):
        take = self.xp.take
        for a, b in bounds:
            idx = order[a:b]
            yield take(self.x, idx, axis=0), take(self.y, idx, axis=0)

    def state_dict(self):
        """The shuffle generator's state, JSON-serialisable; saved between epochs, it lets a resumed
        run draw the same next orders (and transform draws, which are seeded from it) as an
        uninterrupted one."""
        return {"generator": self.generator.bit_generator.state}

    def load_state_dict(self, state):
        """Restore a state returned by :meth:`state_dict`. It usually comes from a checkpoint, so it is
        untrusted: every field is checked first, then the generator is set whole, or a CheckpointError
        says what was expected and what was found and the loader is left as it was."""
        if not isinstance(state, dict) or set(state) != {"generator"}:
            found = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise CheckpointError(f"DataLoader state: expected a dict with the one key 'generator', found {found}")
        bit_generator = self.generator.bit_generator
        trial = type(bit_generator)()
        trial.state = _checked_generator_state(state["generator"], type(bit_generator).__name__)
        bit_generator.state = trial.state


_ARRAY_FORMS = "x and y arrays, an (x, y) tuple, or a Dataset from xpnn.data.load_dataset"


def as_arrays(data, y=None, where="DataLoader"):
    """``(x, y)`` from the forms a loader takes: ``data`` and ``y`` arrays, an ``(x, y)`` tuple
    (``y`` None) or an object with ``.arrays()`` returning one (an :class:`~xpnn.data.Dataset`).
    Anything else is an ArgumentTypeError (a ShapeError for a tuple of another length) that names
    what was expected and what was found."""
    if y is None:
        if hasattr(data, "arrays") and callable(data.arrays) and not _is_array(data):
            pair = data.arrays()
            if not (isinstance(pair, tuple) and len(pair) == 2):
                raise ArgumentTypeError(f"{where}: expected {type(data).__name__}.arrays() to return an (x, y) tuple, found {_found(pair)}")
            data = pair
        if isinstance(data, tuple):
            if len(data) != 2:
                raise ShapeError(f"{where}: expected an (x, y) tuple of two arrays, found a tuple of {len(data)} item{'s' * (len(data) != 1)} ({_found_items(data)})")
            x, y = data
        elif _is_array(data):
            raise ArgumentTypeError(
                f"{where}: expected {_ARRAY_FORMS}, found only x (array of shape {tuple(data.shape)}) and no y; pass (x, y)"
            )
        else:
            raise ArgumentTypeError(f"{where}: expected {_ARRAY_FORMS}, found {_found(data, data=True)}")
    else:
        if isinstance(data, tuple) or hasattr(data, "arrays"):
            what = "an (x, y) tuple" if isinstance(data, tuple) else f"a {type(data).__name__}"
            hint = f"; pass the batch size by name: batch_size={y}" if isinstance(y, int) and not isinstance(y, bool) else ""
            raise ArgumentTypeError(f"{where}: expected y only beside an x array, found {what}, which holds its own labels, and y = {_found(y)}{hint}")
        x = data
    for name, value in (("x", x), ("y", y)):
        if not _is_array(value) and not isinstance(value, list):
            raise ArgumentTypeError(f"{where}: expected {name} to be an array (NumPy, CuPy, any Array API array) or a list, found {_found(value)}")
        kind = getattr(getattr(value, "dtype", None), "kind", None)
        if kind is not None and kind not in "biuf":
            raise ArgumentTypeError(f"{where}: expected {name} of a numeric dtype, found dtype {value.dtype}")
    return x, y


def _is_array(value):
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, (str, bytes))


def _found(value, data=False):
    """A short description of what a user passed: 'str 'mnist'', 'dict with keys ['x', 'y']', 'int 3';
    ``data``: the value stands where the whole data set goes (a hint says how to pass it)."""
    if _is_array(value):
        return f"an array of shape {tuple(value.shape)}"
    if isinstance(value, str):
        hint = f" (load a dataset first: xpnn.data.load_dataset({value!r}))" if data and len(value) < 40 else ""
        return f"str {value[:40]!r}{hint}"
    if isinstance(value, dict):
        return f"dict with keys {sorted(map(str, value))[:5]}; pass (x, y)"
    if isinstance(value, list) and data:
        return f"a list of {len(value)} items; pass a tuple (x, y)"
    if value is None or isinstance(value, (bool, int, float)):
        return f"{type(value).__name__} {value!r}"
    return type(value).__name__


def _found_items(items):
    return ", ".join(f"shape {tuple(v.shape)}" if _is_array(v) else type(v).__name__ for v in items[:4]) + (", ..." if len(items) > 4 else "")


def _checked_generator_state(state, kind):
    """``state`` if it is a valid state of a NumPy ``kind`` (PCG64) bit generator, else a CheckpointError."""
    where = "DataLoader state 'generator'"
    if not isinstance(state, dict) or set(state) != {"bit_generator", "state", "has_uint32", "uinteger"}:
        found = sorted(state) if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"{where}: expected a dict with keys bit_generator, has_uint32, state, uinteger, found {found}")
    if state["bit_generator"] != kind:
        raise CheckpointError(f"{where}: expected bit_generator {kind!r}, found {state['bit_generator']!r}")
    inner = state["state"]
    if not isinstance(inner, dict) or set(inner) != {"state", "inc"}:
        found = sorted(inner) if isinstance(inner, dict) else type(inner).__name__
        raise CheckpointError(f"{where}: expected 'state' to be a dict with keys inc, state, found {found}")
    _check_int(f"{where} state.state", inner["state"], UINT128)
    _check_int(f"{where} state.inc", inner["inc"], UINT128)
    if inner["inc"] % 2 == 0:
        raise CheckpointError(f"{where}: expected an odd state.inc (PCG64 increments are odd), found {inner['inc']}")
    _check_int(f"{where} has_uint32", state["has_uint32"], 2)
    _check_int(f"{where} uinteger", state["uinteger"], UINT32)
    return state


def _check_int(name, value, bound):
    """``value`` must be a plain int (not a bool or a float) in [0, bound)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= value < bound:
        raise CheckpointError(f"{name}: expected an integer in [0, {bound}), found {value!r}")

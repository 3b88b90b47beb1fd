"""Checkpoints: one ``.npz`` file holding everything a run needs to continue bit for bit.

Layout: each array (model parameters and buffers, optimizer state such as
``optimizer/state/0/exp_avg``) is an entry of its own; everything else (hyper-parameters, scheduler
state, epoch, random generator states, the run's config and history) is one JSON string stored as a
0-d unicode array under ``__meta__``, where arrays appear as ``{"__array__": "<entry>"}``. So
``numpy.load(path, allow_pickle=False)`` reads a checkpoint, and loading one never runs pickled code.
Files are written atomically (temporary file, fsync, ``os.replace``).

A checkpoint is input, so reading one is bounded by what it implies. :func:`load_checkpoint` opens
only a regular file, reads the zip directory, the metadata (at most ``MAX_META_BYTES``) and each
array's ``.npy`` header, checks every metadata value against the schema below and every header
against its zip entry, and decompresses no array. :meth:`Checkpoint.restore` checks each array's
shape and dtype against the model and optimizer before reading it, so the model bounds the memory
a checkpoint can take; read without a model (``model_state``, ``optimizer_state``), the arrays may
take at most ``MAX_RATIO`` times the file's size.
"""

import copy
import io
import json
import math
import os
import re
import stat
import struct
import sys
import zipfile
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from .. import backend
from .. import random as xpnn_random
from ..errors import CheckpointError, ConfigError, XpnnError
from ..files import atomic_write

FORMAT = "xpnn-checkpoint"
VERSION = 1
META_KEY = "__meta__"
_ARRAY = "__array__"
_NPY = ".npy"

MAX_META_BYTES = 64 * 2**20
MAX_HEADER_BYTES = 10_000  # numpy.lib.format's own limit on a .npy header
MAX_EPOCH = 10**7
MAX_NAME = 100
MAX_RATIO = 100
_RATIO_SLACK = 2**20  # small arrays of zeros compress far better than MAX_RATIO
_CHUNK = 2**20

_TOP_KEYS = {"format", "version", "xpnn_version", "epoch", "config", "history", "model", "rng", "optimizer", "scheduler", "loader"}
_REQUIRED = ("format", "version", "epoch", "model")
_ARRAY_KINDS = {"model": "fiub", "optimizer": "f"}  # integer and bool model entries are for integer buffers
_COMPATIBLE = {"f": "f", "i": "iu", "u": "iu", "b": "b"}  # the saved dtype kinds a live array of each kind takes
_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")
# What zipfile and zlib raise for a damaged archive (CheckpointError is a ValueError too: callers
# re-raise it before this tuple is tried).
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, struct.error, OverflowError)


def save_checkpoint(path, model, optimizer=None, scheduler=None, epoch=0, config=None, history=None, loader=None):
    """Write ``model`` (and the optimizer, scheduler, DataLoader shuffle state, global random state,
    ``config`` dict and ``history``) to ``path`` as one ``.npz`` file, atomically. ``epoch`` is the
    number of completed epochs, so ``fit(..., start_epoch=checkpoint.epoch)`` continues the run.
    Arrays are kept only from the model's and optimizer's state, the parts a reader checks them in."""
    from .. import __version__

    arrays = {}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        "xpnn_version": __version__,
        "epoch": int(epoch),
        "config": dict(config or {}),
        "history": history.to_dict() if hasattr(history, "to_dict") else dict(history or {}),
        "model": {"class": type(model).__name__, "state": _pack(model.state_dict(), "model", arrays)},
        "rng": xpnn_random.get_rng_state(),
    }
    if optimizer is not None:
        meta["optimizer"] = {"class": type(optimizer).__name__, "state": _pack(optimizer.state_dict(), "optimizer", arrays)}
    if scheduler is not None:
        meta["scheduler"] = {"class": type(scheduler).__name__, "state": _plain(scheduler.state_dict())}
    if loader is not None and hasattr(loader, "state_dict"):
        meta["loader"] = _plain(loader.state_dict())
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot save checkpoint {path}: its metadata is not JSON-serialisable ({exc})") from exc
    arrays[META_KEY] = np.array(text)
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return Path(path)


@dataclass(frozen=True)
class _Entry:
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


class Checkpoint:
    """A checkpoint read by :func:`load_checkpoint`: its validated metadata as attributes (``path``,
    ``epoch``, ``config``, ``history``, ``model_class``, ``optimizer_class``, ``scheduler_class``,
    ``scheduler_state``, ``loader_state``, ``rng_state``, ``xpnn_version``, ``meta``). Its arrays stay
    in the file until :meth:`restore` has checked them against live objects, or until
    ``model_state`` / ``optimizer_state`` are read."""

    def __init__(self, path, identity, meta, entries):
        optimizer, scheduler = meta.get("optimizer", {}), meta.get("scheduler", {})
        self.path, self.meta = path, meta
        self.epoch, self.xpnn_version = meta["epoch"], meta.get("xpnn_version")
        self.config, self.history = meta.get("config", {}), meta.get("history", {})
        self.model_class, self.optimizer_class = meta["model"]["class"], optimizer.get("class")
        self.scheduler_class, self.scheduler_state = scheduler.get("class"), scheduler.get("state")
        self.loader_state, self.rng_state = meta.get("loader"), meta.get("rng")
        self._identity = identity
        self._model = OrderedDict((name, entries[ref[_ARRAY]]) for name, ref in meta["model"]["state"].items())
        self._optimizer = _link_optimizer(optimizer.get("state"), entries)

    def __repr__(self):
        return f"Checkpoint({str(self.path)!r}, epoch={self.epoch}, model_class={self.model_class!r})"

    @cached_property
    def model_state(self):
        """The model's arrays by name, read from the file on first use."""
        return OrderedDict(_unpack(self._model, self._read_unbounded()))

    @cached_property
    def optimizer_state(self):
        """The optimizer's ``state_dict`` (state indices as strings), read from the file on first use."""
        return _unpack(self._optimizer, self._read_unbounded())

    def restore(self, model=None, optimizer=None, scheduler=None, loader=None, rng=True):
        """Load the saved state into whichever of ``model``, ``optimizer``, ``scheduler`` and
        ``loader`` are given, and (``rng``) the global random generator. Every name, shape, dtype
        and value is checked first and only the arrays these objects take are read, so a
        checkpoint that does not fit raises :class:`CheckpointError` and changes nothing."""
        entries = OrderedDict()
        if model is not None:
            entries.update(self._check_model(model))
        if optimizer is not None:
            entries.update(self._check_optimizer(optimizer))
        if scheduler is not None:
            self._check_class("scheduler", scheduler, self.scheduler_class)
            self._check_like(self.scheduler_state, scheduler.state_dict(), "scheduler state")
        if loader is not None and self.loader_state is not None and hasattr(loader, "load_state_dict"):
            self._check_like(self.loader_state, loader.state_dict(), "loader state")
        else:
            loader = None
        arrays = self._read(entries.values())
        steps = [
            (model, lambda: OrderedDict(_unpack(self._model, arrays))),
            (optimizer, lambda: _unpack(self._optimizer, arrays)),
            (scheduler, lambda: copy.deepcopy(self.scheduler_state)),
            (loader, lambda: copy.deepcopy(self.loader_state)),
        ]
        self._load_all([(obj, state()) for obj, state in steps if obj is not None])
        if rng and self.rng_state is not None:
            xpnn_random.set_rng_state(self.rng_state)
        return self

    def _load_all(self, steps):
        """Hand each object its state; when one refuses it, give the objects before it their old
        state back, so that a failed restore changes nothing."""
        done = []
        try:
            for obj, state in steps:
                before = obj.state_dict()
                obj.load_state_dict(state)
                done.append((obj, before))
        except XpnnError as exc:
            for earlier, before in reversed(done):
                earlier.load_state_dict(before)
            raise CheckpointError(f"{self._describe()} does not fit this {type(obj).__name__}: {exc}") from exc

    def _describe(self):
        name = self.config.get("model")
        return f"checkpoint {self.path}" + (f" (a {name!r} model)" if isinstance(name, str) else f" (a {self.model_class})")

    def _check_model(self, model):
        """Check names, shapes and dtype kinds against ``model``; returns the entries it takes."""
        expected = OrderedDict((n, (p.shape, p.dtype)) for n, p in model.named_parameters())
        expected.update((n, (tuple(b.shape), b.dtype)) for n, b in model.named_buffers())
        missing = [n for n in expected if n not in self._model]
        unexpected = [n for n in self._model if n not in expected]
        wrong = [n for n in expected if n in self._model and tuple(expected[n][0]) != self._model[n].shape]
        problems = []
        if missing:
            problems.append(f"missing {_names(missing)}")
        if unexpected:
            problems.append(f"unexpected {_names(unexpected)}")
        if wrong:
            n, more = wrong[0], f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
            problems.append(f"{n} has shape {self._model[n].shape} in the checkpoint but {tuple(expected[n][0])} in the model{more}")
        for n in [n for n in expected if n in self._model]:
            kind = _kind(expected[n][1])
            if self._model[n].dtype.kind not in _COMPATIBLE.get(kind, kind):
                problems.append(f"{n} has dtype {self._model[n].dtype} in the checkpoint but {backend.dtype_name(expected[n][1])} in the model")
                break
        if problems:
            raise CheckpointError(f"{self._describe()} does not fit this {type(model).__name__}: {'; '.join(problems)}")
        return OrderedDict((entry.name, entry) for entry in self._model.values())

    def _check_class(self, what, obj, saved):
        if saved is None:
            raise CheckpointError(f"checkpoint {self.path} holds no {what} state")
        if type(obj).__name__ != saved:
            raise CheckpointError(f"checkpoint {self.path} holds {what} state of a {saved}, not of a {type(obj).__name__}")

    def _check_optimizer(self, optimizer):
        """Check the class, parameter groups and per-parameter state against ``optimizer``; returns
        the entries it takes."""
        self._check_class("optimizer", optimizer, self.optimizer_class)
        groups = self._optimizer["param_groups"]
        own = [len(g["params"]) for g in optimizer.param_groups]
        saved = [len(g["params"]) for g in groups]
        if own != saved:
            raise CheckpointError(
                f"checkpoint {self.path}: the optimizer was saved with parameter groups of sizes {saved}, this one has {own}"
            )
        first = 0
        for i, (group, live) in enumerate(zip(groups, optimizer.param_groups)):
            self._check_group(group, live, first, f"optimizer param_groups[{i}]")
            first += len(live["params"])
        params = [p for g in optimizer.param_groups for p in g["params"]]
        entries = OrderedDict()
        for index, values in self._optimizer["state"].items():
            if int(index) >= len(params):
                raise CheckpointError(f"checkpoint {self.path}: optimizer state for parameter {index}, but this {type(optimizer).__name__} has {len(params)} parameters")
            for key, value in values.items():
                if isinstance(value, _Entry):
                    self._check_state_array(value, params[int(index)].shape, f"optimizer state {key!r} of parameter {index}")
                    entries[value.name] = value
        return entries

    def _check_group(self, group, live, first, where):
        """A saved parameter group's hyper-parameters must be of the live group's kinds (others, such
        as a schedule's ``initial_lr``, must be numbers; missing ones keep their live values) and its
        parameter indices the live group's."""
        for key, value in group.items():
            if key in live and key != "params":
                self._check_like(value, live[key], f"{where}[{key!r}]")
            elif key not in live and not _is_number(value):
                self._corrupt(f"{where}[{key!r}]", "a finite number", value)
        indices = list(range(first, first + len(live["params"])))
        if group["params"] != indices:
            self._corrupt(f"{where}['params']", indices, group["params"])

    def _check_state_array(self, entry, shape, where):
        if entry.shape not in ((), tuple(shape)):
            raise CheckpointError(f"checkpoint {self.path}: {where} has shape {entry.shape}, expected {tuple(shape)}")

    def _check_like(self, value, example, where):
        """Check ``value`` (from the metadata) against ``example`` (the live object's own state):
        the same keys, list lengths and kinds of value, a random generator state where the example
        has one."""
        if isinstance(example, dict) and "bit_generator" in example:
            try:
                xpnn_random.check_rng_state(value)
            except ConfigError as exc:
                raise CheckpointError(f"checkpoint {self.path} is corrupt: {where}: {exc}") from exc
        elif isinstance(example, dict):
            keys = sorted(map(str, example))
            if not isinstance(value, dict) or sorted(value) != keys:
                self._corrupt(where, f"a dict with keys {keys}", sorted(value) if isinstance(value, dict) else value)
            for key, item in example.items():
                self._check_like(value[str(key)], item, f"{where}[{str(key)!r}]")
        elif isinstance(example, (list, tuple)):
            if not isinstance(value, list) or len(value) != len(example):
                self._corrupt(where, f"a list of {len(example)} values", value)
            for i, (item, like) in enumerate(zip(value, example)):
                self._check_like(item, like, f"{where}[{i}]")
        elif _kind_of(value) != _kind_of(example):
            self._corrupt(where, _kind_of(example), value)

    def _corrupt(self, where, expected, found):
        raise CheckpointError(f"checkpoint {self.path} is corrupt: {_mismatch(where, expected, found)}")

    def _read_unbounded(self):
        """Every array, for reading without a model to bound them: refused when they would take
        more than ``MAX_RATIO`` times the file's size."""
        entries = list(self._model.values()) + _entries_in(self._optimizer)
        total, size = sum(e.info.file_size for e in entries), self._identity[2]
        if total > MAX_RATIO * size + _RATIO_SLACK:
            raise CheckpointError(
                f"checkpoint {self.path}: its arrays would decompress to {total:,} bytes from a {size:,}-byte file "
                f"(more than {MAX_RATIO}x); restore it into a model, whose shapes bound what is read"
            )
        return self._read(entries)

    def _read(self, entries):
        """Decompress ``entries`` (already checked) from the file this checkpoint was loaded from."""
        with _open_regular(self.path) as f:
            if _identity(f) != self._identity:
                raise CheckpointError(f"checkpoint {self.path} changed on disk after it was loaded; load it again")
            with _zip(f, self.path) as archive:
                return {entry.name: _read_array(archive, entry, self.path) for entry in entries}


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint`: its metadata, checked against the
    schema, and its arrays' headers. Raises :class:`CheckpointError` for a missing, non-regular,
    unreadable, truncated, corrupt or foreign file."""
    path = Path(path)
    with _open_regular(path) as f:
        _check_magic(f, path)
        identity = _identity(f)
        with _zip(f, path) as archive:
            infos = _directory(archive, path)
            meta = _read_meta(archive, infos, path)
            references = _check_meta(meta, path)
            _check_entries(infos, references, path)
            entries = {name: _read_header(archive, infos[name + _NPY], name, role, path) for name, role in references.items()}
    return Checkpoint(path, identity, meta, entries)


def restore(checkpoint, model=None, optimizer=None, scheduler=None, loader=None, rng=True):
    """Load ``checkpoint`` (a path or a :class:`Checkpoint`) into the given objects; returns the
    :class:`Checkpoint` (its ``epoch`` is where training continues)."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint)
    return checkpoint.restore(model, optimizer, scheduler, loader, rng)


# ---- the file and its zip archive ----------------------------------------------------------------


def _open_regular(path):
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


def _identity(f):
    """What tells this file from a later one at the same path (device, inode, size, mtime)."""
    st = os.fstat(f.fileno())
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _check_magic(f, path):
    magic = f.read(6)
    f.seek(0)
    if not magic:
        raise CheckpointError(f"cannot read checkpoint {path}: it is empty")
    if magic == b"\x93NUMPY":
        raise CheckpointError(f"cannot read checkpoint {path}: it holds a single array (.npy), not an xpnn checkpoint (.npz)")
    if magic[:2] != b"PK":
        raise CheckpointError(f"cannot read checkpoint {path}: it is not an .npz (zip) archive")


def _zip(f, path):
    try:
        return zipfile.ZipFile(f)
    except _ZIP_ERRORS as exc:
        raise _unreadable(path, exc) from exc


def _unreadable(path, exc):
    return CheckpointError(f"cannot read checkpoint {path}: not a valid .npz file, or truncated ({type(exc).__name__}: {exc})")


def _directory(archive, path):
    """The archive's entries by name: each once, a ``.npy`` file, stored or deflated, unencrypted."""
    infos = {}
    for info in archive.infolist():
        if info.filename in infos:
            raise CheckpointError(f"checkpoint {path} is corrupt: entry {info.filename!r} appears twice")
        if not info.filename.endswith(_NPY):
            raise CheckpointError(f"checkpoint {path} is corrupt: unknown entry {info.filename!r} (expected .npy arrays only)")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED) or info.flag_bits & 1:
            raise CheckpointError(f"checkpoint {path}: entry {info.filename!r} is encrypted or uses compression method {info.compress_type}; expected stored or deflated")
        infos[info.filename] = info
    return infos


def _check_entries(infos, references, path):
    """The archive holds exactly the metadata and the arrays the metadata refers to."""
    for name in infos:
        if name != META_KEY + _NPY and name[: -len(_NPY)] not in references:
            raise CheckpointError(f"checkpoint {path} is corrupt: unknown entry {name!r} (the metadata refers to no such array)")
    for name in references:
        if name + _NPY not in infos:
            raise CheckpointError(f"checkpoint {path} is corrupt: the metadata refers to array {name!r}, which the archive lacks")


def _read_meta(archive, infos, path):
    """The metadata JSON, after checking that its entry is a 0-d unicode array of at most
    ``MAX_META_BYTES`` (by the zip directory, before reading it)."""
    info = infos.get(META_KEY + _NPY)
    if info is None:
        raise CheckpointError(f"{path} is not an xpnn checkpoint: it has no {META_KEY} entry")
    if info.file_size > MAX_META_BYTES:
        raise CheckpointError(f"checkpoint {path} is corrupt: its metadata takes {info.file_size:,} bytes, expected at most {MAX_META_BYTES:,}")
    entry = _read_header(archive, info, META_KEY, "meta", path)
    try:
        with archive.open(info) as stream:
            data = _read_exactly(stream, entry.header_size + entry.nbytes, META_KEY, path)[entry.header_size :]
        text = str(np.frombuffer(data, entry.dtype, count=1)[0])
    except CheckpointError:
        raise
    except _ZIP_ERRORS as exc:
        raise _unreadable(path, exc) from exc
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: its metadata is not valid JSON ({type(exc).__name__}: {str(exc)[:80]})") from exc


def _read_header(archive, info, name, role, path):
    """The ``.npy`` header of one entry, read with bounded reads; its dtype must suit ``role`` and
    the entry's size in the zip directory must be the header's plus the array's bytes."""
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
    entry = _Entry(name, info, len(header), shape, dtype, fortran)
    _check_entry(entry, role, path)
    return entry


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


def _check_entry(entry, role, path):
    kinds = "U" if role == "meta" else _ARRAY_KINDS[role]
    if entry.dtype.kind not in kinds or (entry.dtype.kind == "f" and entry.dtype.itemsize > 8) or entry.dtype.hasobject:
        wanted = {"U": "a unicode string", "f": "a floating dtype (float16, float32, float64)"}.get(kinds, "a floating dtype, or an integer or bool dtype for integer buffers")
        raise CheckpointError(f"checkpoint {path} is corrupt: entry {entry.name!r} has dtype {entry.dtype}, expected {wanted}")
    if role == "meta" and (entry.shape != () or not entry.dtype.itemsize):
        raise CheckpointError(f"checkpoint {path} is corrupt: its metadata entry is a {entry.dtype} array of shape {entry.shape}, expected a non-empty string of shape ()")
    declared = entry.info.file_size
    if declared != entry.header_size + entry.nbytes:
        raise CheckpointError(
            f"checkpoint {path} is corrupt: entry {entry.name!r} declares {declared:,} bytes in the zip directory, "
            f"but its header (shape {entry.shape}, {entry.dtype}) implies {entry.header_size + entry.nbytes:,}"
        )


def _read_exactly(stream, size, name, path):
    data = stream.read(size)
    if len(data) != size:
        raise CheckpointError(f"checkpoint {path} is truncated: entry {name!r} ends after {len(data)} of {size} bytes")
    return data


def _read_array(archive, entry, path):
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


# ---- the metadata schema -----------------------------------------------------------------------


def _check_meta(meta, path):
    """Check every metadata value a reader uses; returns the array entries it refers to (entry
    name -> "model" or "optimizer")."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an xpnn checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if type(meta.get("version")) is not int or meta["version"] != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {meta.get('version')!r}; this xpnn reads version {VERSION}")
    try:
        return _check_schema(meta)
    except ConfigError as exc:  # the random generator's state
        raise CheckpointError(f"checkpoint {path} is corrupt: {exc}") from exc
    except CheckpointError as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: {exc}") from exc


def _check_schema(meta):
    _expect(meta.keys() <= _TOP_KEYS, "the metadata's keys", f"some of {sorted(_TOP_KEYS)}", sorted(meta.keys() - _TOP_KEYS))
    _expect(all(k in meta for k in _REQUIRED), "the metadata's keys", f"all of {list(_REQUIRED)}", sorted(meta))
    epoch = meta["epoch"]
    _expect(type(epoch) is int and 0 <= epoch <= MAX_EPOCH, "epoch", f"a whole number in [0, {MAX_EPOCH:,}]", epoch)
    _expect(isinstance(meta.get("xpnn_version", ""), str), "xpnn_version", "a string", meta.get("xpnn_version"))
    _expect(isinstance(meta.get("config", {}), dict), "config", "a dict", meta.get("config"))
    _check_history(meta.get("history", {}))
    if "rng" in meta:
        xpnn_random.check_rng_state(meta["rng"])
    if "loader" in meta:
        _expect(isinstance(meta["loader"], dict), "loader", "a dict", meta["loader"])
    references = {}
    _check_part(meta, "model", _check_model_state, references)
    for part, check in (("optimizer", _check_optimizer_state), ("scheduler", _check_scheduler_state)):
        if part in meta:
            _check_part(meta, part, check, references)
    return references


def _check_part(meta, part, check_state, references):
    value = meta[part]
    _expect(isinstance(value, dict) and sorted(value) == ["class", "state"], part, "a dict with keys 'class' and 'state'", value)
    name = value["class"]
    _expect(isinstance(name, str) and name.isidentifier() and len(name) <= MAX_NAME, f"{part}['class']", "a class name", name)
    check_state(value["state"], f"{part}['state']", references)


def _check_history(history):
    _expect(isinstance(history, dict), "history", "a dict of lists", history)
    for key, values in history.items():
        _expect(isinstance(values, list), f"history[{key!r}]", "a list", values)
        for i, value in enumerate(values):
            _expect(value is None or _is_number(value), f"history[{key!r}][{i}]", "a finite number or null", value)


def _check_model_state(state, where, references):
    _expect(isinstance(state, dict), where, "a dict of arrays", state)
    for name, value in state.items():
        _reference(value, f"{where}[{name!r}]", "model", references)


def _check_optimizer_state(state, where, references):
    keys = sorted(state) if isinstance(state, dict) else None
    _expect(keys in (["param_groups", "state"], ["class", "param_groups", "state"]), where, "a dict with keys 'param_groups', 'state' (and 'class')", state)
    _expect(isinstance(state.get("class", ""), str), f"{where}['class']", "a class name", state.get("class"))
    groups = state["param_groups"]
    _expect(isinstance(groups, list) and groups, f"{where}['param_groups']", "a non-empty list", groups)
    for i, group in enumerate(groups):
        at = f"{where}['param_groups'][{i}]"
        _expect(isinstance(group, dict) and isinstance(group.get("params"), list), at, "a dict with a 'params' list", group)
        _expect(all(type(p) is int for p in group["params"]), f"{at}['params']", "a list of parameter indices", group["params"])
    entries = state["state"]
    _expect(isinstance(entries, dict), f"{where}['state']", "a dict", entries)
    for index, values in entries.items():
        _expect(_INDEX.fullmatch(index) is not None, f"{where}['state'] key", "a parameter index", index)
        _expect(isinstance(values, dict), f"{where}['state'][{index!r}]", "a dict", values)
        for key, value in values.items():
            at = f"{where}['state'][{index!r}][{key!r}]"
            if isinstance(value, dict):
                _reference(value, at, "optimizer", references)
            else:
                _expect(_is_number(value), at, "an array or a finite number", value)


def _check_scheduler_state(state, where, references):
    _expect(isinstance(state, dict), where, "a dict", state)


def _reference(value, where, role, references):
    """``{"__array__": name}``: a reference to the array entry ``name``, used once."""
    name = value.get(_ARRAY) if isinstance(value, dict) and len(value) == 1 else None
    _expect(isinstance(name, str) and name != META_KEY, where, f'{{"{_ARRAY}": <entry name>}}', value)
    _expect(name not in references, where, "an array no other value refers to", name)
    references[name] = role


def _expect(ok, where, expected, found):
    if not ok:
        raise CheckpointError(_mismatch(where, expected, found))


def _mismatch(where, expected, found):
    shown = repr(found)
    return f"{where}: expected {expected}, found {shown if len(shown) <= 80 else shown[:77] + '...'}"


def _is_number(value):
    """A finite int or float (not a bool) that a float can hold."""
    if type(value) is int:
        return abs(value) <= sys.float_info.max
    return type(value) is float and math.isfinite(value)


def _kind_of(value):
    """The kind of a JSON leaf, for comparing saved values with live ones: ints and floats are
    both numbers (an lr given as 1 is saved as 1 and may be loaded where 0.5 was)."""
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "a finite number" if _is_number(_plain(value)) else "a non-finite number"
    if value is None:
        return "null"
    return "a string" if isinstance(value, str) else f"a {type(value).__name__}"


def _kind(dtype):
    return np.dtype(backend.dtype_name(dtype)).kind


# ---- packing arrays into the metadata ----------------------------------------------------------


def _pack(obj, prefix, arrays):
    """Move every array in a nested dict/list into ``arrays`` (under its path) and return the
    JSON-ready rest, with ``{"__array__": path}`` in the arrays' places."""
    if isinstance(obj, dict):
        return {str(k): _pack(v, f"{prefix}/{k}", arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_pack(v, f"{prefix}/{i}", arrays) for i, v in enumerate(obj)]
    if isinstance(obj, np.ndarray):
        arrays[prefix] = obj
        return {_ARRAY: prefix}
    return _plain(obj)


def _plain(obj):
    """``obj`` with NumPy scalars as Python numbers (arrays stay, and fail JSON serialisation)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj.item() if isinstance(obj, np.generic) else obj


def _link_optimizer(state, entries):
    """The optimizer's saved state with the :class:`_Entry` of each array in its place (arrays are
    only in the per-parameter state; the schema checked those references)."""
    if state is None:
        return None
    per_parameter = {
        index: {key: entries[value[_ARRAY]] if isinstance(value, dict) else value for key, value in values.items()}
        for index, values in state["state"].items()
    }
    return {**state, "state": per_parameter}


def _unpack(obj, arrays):
    """``obj`` with each :class:`_Entry` replaced by its array from ``arrays``."""
    if isinstance(obj, dict):
        return {k: _unpack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, arrays) for v in obj]
    return arrays[obj.name] if isinstance(obj, _Entry) else obj


def _entries_in(obj):
    if isinstance(obj, dict):
        return [e for v in obj.values() for e in _entries_in(v)]
    if isinstance(obj, list):
        return [e for v in obj for e in _entries_in(v)]
    return [obj] if isinstance(obj, _Entry) else []


def _names(names, limit=3):
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")

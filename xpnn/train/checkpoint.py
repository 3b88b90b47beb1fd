"""Checkpoints: one ``.npz`` file holding everything a run needs to continue bit for bit.

Layout: each array (model parameters and buffers, optimizer state such as
``optimizer/state/0/exp_avg``) is an entry of its own; everything else (hyper-parameters, scheduler
state, epoch, random generator states, the run's config and history) is one JSON string stored as a
0-d unicode array under ``__meta__``, where arrays appear as ``{"__array__": "<entry>"}``. So
``numpy.load(path, allow_pickle=False)`` reads a checkpoint, and loading one never runs pickled code.
Files are written atomically (temporary file, fsync, ``os.replace``).

A checkpoint is input, so reading one is bounded by what it implies. :func:`load_checkpoint` opens
only a regular file, reads the zip directory, the metadata (at most ``MAX_META_BYTES``) and each
array's ``.npy`` header (``npz_reader``), checks every metadata value against the schema
(``checkpoint_schema``) and every header against its zip entry, and decompresses no array.
:meth:`Checkpoint.restore` checks each array's shape and dtype against the model and optimizer
before reading it, so the model bounds the memory a checkpoint can take; read without a model
(``model_state``, ``optimizer_state``), the arrays may take at most ``MAX_RATIO`` times the
file's size. This module holds the public API and what joins those parts: the metadata's array
references to the archive's entries, and a checkpoint to the live objects it is restored into.

Format version 2 stores Linear weights (out_features, in_features), PyTorch's layout; version 1
stored their transpose. A version-1 checkpoint is converted as it is read: restored into a model,
the model says which entries are Linear weights (and which optimizer state belongs to them);
read without one (``model_state``), its saved architecture, or a run config naming one of the
CLI's models (whose only 2-D arrays are Linear weights), does.
"""

import copy
import json
import math
from collections import OrderedDict
from functools import cached_property
from pathlib import Path

import numpy as np

from .. import backend
from .. import random as xpnn_random
from ..errors import CheckpointError, ConfigError, XpnnError
from ..files import atomic_write
from .checkpoint_schema import ARRAY_KEY, FORMAT, META_KEY, VERSION, check_entry_dtype, check_meta, is_number, mismatch
from .npz_reader import NPY, Entry, check_magic, check_size, directory, identity, open_regular, open_zip, read_array, read_header, read_string

MAX_META_BYTES = 64 * 2**20
MAX_RATIO = 100
_RATIO_SLACK = 2**20  # small arrays of zeros compress far better than MAX_RATIO
_COMPATIBLE = {"f": "f", "i": "iu", "u": "iu", "b": "b"}  # the saved dtype kinds a live array of each kind takes


def save_checkpoint(path, model, optimizer=None, scheduler=None, epoch=0, config=None, history=None, loader=None, _require_architecture=False):
    """Write ``model`` (and the optimizer, scheduler, DataLoader shuffle state, global random state,
    ``config`` dict and ``history``) to ``path`` as one ``.npz`` file, atomically. ``epoch`` is the
    number of completed epochs, so ``fit(..., start_epoch=checkpoint.epoch)`` continues the run.
    Arrays are kept only from the model's and optimizer's state, the parts a reader checks them in.
    When the model can describe itself (``model.get_config()``: built only from registered
    classes), its architecture is saved too, so :func:`load` and ``xpnn eval`` rebuild it without
    its code; otherwise the checkpoint holds weights only (restore them into a model built in code)."""
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
    architecture = _architecture(model, required=_require_architecture)
    if architecture is not None:
        meta["model"]["architecture"] = architecture
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
        self.architecture = meta["model"].get("architecture")
        self.version = meta["version"]
        self._identity = identity
        self._model = OrderedDict((name, entries[ref[ARRAY_KEY]]) for name, ref in meta["model"]["state"].items())
        self._optimizer = _link_optimizer(optimizer.get("state"), entries)

    def __repr__(self):
        """One short line: path, epoch, model class and size, optimizer, scheduler, config keys."""
        values = sum(math.prod(entry.shape) for entry in self._model.values())
        model = f"{self.model_class} ({values:,} values in {len(self._model)} arrays{'' if self.architecture is None else ', architecture saved'})"
        parts = [repr(str(self.path)), f"epoch={self.epoch}", f"model={model}"]
        parts += [f"{k}={v}" for k, v in (("optimizer", self.optimizer_class), ("scheduler", self.scheduler_class)) if v is not None]
        keys = [str(k) for k in self.config]
        if keys:
            shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} keys)" if len(keys) > 8 else "")
            parts.append(f"config keys: {shown[:200]}")
        return f"Checkpoint({', '.join(parts)})"

    def build_model(self, device=None, dtype=None):
        """The saved model, rebuilt from its saved architecture (``nn.from_config``: registered
        classes only, never code from the file) on ``device`` and in ``dtype`` (default: the saved
        weights' dtype), with the saved weights restored; training mode, as built (call ``eval()``
        for inference). Raises a CheckpointError when the checkpoint holds no architecture (its
        model was not built from registered classes, or an older xpnn saved it), names a class
        that is not registered here, or describes a model that does not fit its weights."""
        from ..nn.architecture import from_config

        if self.architecture is None:
            raise CheckpointError(
                f"checkpoint {self.path} holds no model architecture: its model (a {self.model_class}) could not describe itself "
                f"when it was saved (a class not registered with @xpnn.nn.register, or an older xpnn); build the model in code and "
                f"call restore(model)"
            )
        entries = list(self._model.values())
        total, size = sum(e.info.file_size for e in entries), self._identity[2]
        if total > MAX_RATIO * size + _RATIO_SLACK:
            raise CheckpointError(f"checkpoint {self.path}: its model's arrays would take {total:,} bytes from a {size:,}-byte file (more than {MAX_RATIO}x)")
        try:
            model = from_config(self.architecture, device=device, dtype=dtype, max_parameters=sum(math.prod(e.shape) for e in entries))
        except ConfigError as exc:
            raise CheckpointError(f"checkpoint {self.path}: cannot build its model from the saved architecture: {exc}") from exc
        saved = {e.dtype.name for e in entries if e.dtype.kind == "f"}
        if dtype is None and len(saved) == 1 and {backend.dtype_name(p.dtype) for p in model.parameters()} != saved:
            model.to(dtype=saved.pop())  # a model cast after it was built (model.to(dtype=...)) comes back in the saved dtype
        self.restore(model, rng=False)
        return model

    @cached_property
    def model_state(self):
        """The model's arrays by name, read from the file on first use, in this xpnn's layouts (a
        version-1 checkpoint's Linear weights transposed, see the module docstring)."""
        flips = self._saved_linear_weights() if self.version == 1 else set()
        return _flipped(OrderedDict(_unpack(self._model, self._read_unbounded())), flips)

    @cached_property
    def optimizer_state(self):
        """The optimizer's ``state_dict`` (state indices as strings), read from the file on first
        use, as saved: a version-1 checkpoint's state of Linear weights keeps the (in, out)
        layout here (``restore`` converts it, knowing the parameters from the model)."""
        return _unpack(self._optimizer, self._read_unbounded())

    def _saved_linear_weights(self):
        """The names of a version-1 checkpoint's Linear weights, found without a live model: from
        the saved architecture (the model built from it, the random state kept), or from a run
        config naming one of the CLI's models."""
        from ..models import MODELS
        from ..nn.architecture import from_config

        if self.architecture is not None:
            state = xpnn_random.get_rng_state()
            try:
                model = from_config(self.architecture, max_parameters=sum(math.prod(e.shape) for e in self._model.values()))
            except ConfigError as exc:
                raise CheckpointError(f"checkpoint {self.path} (format version 1): cannot find its Linear weights from its saved architecture: {exc}") from exc
            finally:
                xpnn_random.set_rng_state(state)
            return _linear_weights(model)[0]
        if self.config.get("model") in MODELS:
            return {name for name, entry in self._model.items() if len(entry.shape) == 2}
        raise CheckpointError(
            f"checkpoint {self.path} has format version 1, which stored Linear weights (in, out), and neither an architecture "
            f"nor a CLI model name that tells which arrays those are; restore it into a model (restore(model)) to convert them"
        )

    def restore(self, model=None, optimizer=None, scheduler=None, loader=None, rng=True):
        """Load the saved state into whichever of ``model``, ``optimizer``, ``scheduler`` and
        ``loader`` are given, and (``rng``) the global random generator. Every name, shape, dtype
        and value is checked first and only the arrays these objects take are read, so a
        checkpoint that does not fit raises :class:`CheckpointError` and changes nothing. A
        version-1 checkpoint's Linear weights, and their optimizer state, are transposed to
        (out, in) on the way in; its optimizer state needs the model restored with it."""
        flips, flipped_params = set(), set()
        if self.version == 1:
            if optimizer is not None and model is None:
                raise CheckpointError(
                    f"checkpoint {self.path} has format version 1, whose Linear weights' optimizer state is stored (in, out): "
                    f"restore the model with the optimizer (restore(model, optimizer)) so that state can be converted"
                )
            if model is not None:
                flips, flipped_params = _linear_weights(model)
        entries = OrderedDict()
        if model is not None:
            entries.update(self._check_model(model, flips))
        if optimizer is not None:
            entries.update(self._check_optimizer(optimizer, flipped_params))
        if scheduler is not None:
            self._check_class("scheduler", scheduler, self.scheduler_class)
            self._check_like(self.scheduler_state, scheduler.state_dict(), "scheduler state")
        if loader is not None and self.loader_state is not None and hasattr(loader, "load_state_dict"):
            self._check_like(self.loader_state, loader.state_dict(), "loader state")
        else:
            loader = None
        arrays = self._read(entries.values())
        steps = [
            (model, lambda: _flipped(OrderedDict(_unpack(self._model, arrays)), flips)),
            (optimizer, lambda: _flipped_optimizer(_unpack(self._optimizer, arrays), optimizer, flipped_params)),
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

    def _check_model(self, model, flips=()):
        """Check names, shapes and dtype kinds against ``model`` (the entries in ``flips`` are
        saved transposed); returns the entries it takes."""
        expected = OrderedDict((n, (p.shape[::-1] if n in flips else p.shape, p.dtype)) for n, p in model.named_parameters())
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

    def _check_optimizer(self, optimizer, flipped=()):
        """Check the class, parameter groups and per-parameter state against ``optimizer`` (the
        state of the parameters whose ids are in ``flipped`` is saved transposed); returns the
        entries it takes."""
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
                if isinstance(value, Entry):
                    param = params[int(index)]
                    shape = param.shape[::-1] if id(param) in flipped else param.shape
                    self._check_state_array(value, shape, f"optimizer state {key!r} of parameter {index}")
                    entries[value.name] = value
        return entries

    def _check_group(self, group, live, first, where):
        """A saved parameter group's hyper-parameters must be of the live group's kinds (others, such
        as a schedule's ``initial_lr``, must be numbers; missing ones keep their live values) and its
        parameter indices the live group's."""
        for key, value in group.items():
            if key in live and key != "params":
                self._check_like(value, live[key], f"{where}[{key!r}]")
            elif key not in live and not is_number(value):
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
        raise CheckpointError(f"checkpoint {self.path} is corrupt: {mismatch(where, expected, found)}")

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
        with open_regular(self.path) as f:
            if identity(f) != self._identity:
                raise CheckpointError(f"checkpoint {self.path} changed on disk after it was loaded; load it again")
            with open_zip(f, self.path) as archive:
                return {entry.name: read_array(archive, entry, self.path) for entry in entries}


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint`: its metadata, checked against the
    schema, and its arrays' headers. Raises :class:`CheckpointError` for a missing, non-regular,
    unreadable, truncated, corrupt or foreign file."""
    path = Path(path)
    with open_regular(path) as f:
        check_magic(f, path)
        file_identity = identity(f)
        with open_zip(f, path) as archive:
            infos = directory(archive, path)
            meta = _read_meta(archive, infos, path)
            references = check_meta(meta, path)
            _check_entries(infos, references, path)
            entries = {name: _read_entry(archive, infos[name + NPY], name, role, path) for name, role in references.items()}
    return Checkpoint(path, file_identity, meta, entries)


def load(path, device=None, dtype=None):
    """The model saved in the checkpoint at ``path`` (by :func:`save`, ``save_checkpoint`` or
    ``ModelCheckpoint``), rebuilt from its saved architecture with its weights, on ``device``:
    ``keras.models.load_model`` / ``torch.load`` for xpnn. See :meth:`Checkpoint.build_model`."""
    return load_checkpoint(path).build_model(device=device, dtype=dtype)


def save(model, path, **kwargs):
    """Save ``model`` to ``path`` (a ``.npz`` checkpoint) so that :func:`load` rebuilds it without
    its code: its architecture (``model.get_config()``) and weights. A model that cannot describe
    itself (a class not registered with ``@xpnn.nn.register``, an argument that is not data) is a
    ConfigError naming the module and argument. ``kwargs`` go to :func:`save_checkpoint`
    (optimizer, scheduler, epoch, config, history, loader)."""
    return save_checkpoint(path, model, _require_architecture=True, **kwargs)


def restore(checkpoint, model=None, optimizer=None, scheduler=None, loader=None, rng=True):
    """Load ``checkpoint`` (a path or a :class:`Checkpoint`) into the given objects; returns the
    :class:`Checkpoint` (its ``epoch`` is where training continues)."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint)
    return checkpoint.restore(model, optimizer, scheduler, loader, rng)


# ---- the archive's entries and the metadata ----------------------------------------------------


def _check_entries(infos, references, path):
    """The archive holds exactly the metadata and the arrays the metadata refers to."""
    for name in infos:
        if name != META_KEY + NPY and name[: -len(NPY)] not in references:
            raise CheckpointError(f"checkpoint {path} is corrupt: unknown entry {name!r} (the metadata refers to no such array)")
    for name in references:
        if name + NPY not in infos:
            raise CheckpointError(f"checkpoint {path} is corrupt: the metadata refers to array {name!r}, which the archive lacks")


def _read_meta(archive, infos, path):
    """The metadata JSON, after checking that its entry is a 0-d unicode array of at most
    ``MAX_META_BYTES`` (by the zip directory, before reading it)."""
    info = infos.get(META_KEY + NPY)
    if info is None:
        raise CheckpointError(f"{path} is not an xpnn checkpoint: it has no {META_KEY} entry")
    if info.file_size > MAX_META_BYTES:
        raise CheckpointError(f"checkpoint {path} is corrupt: its metadata takes {info.file_size:,} bytes, expected at most {MAX_META_BYTES:,}")
    entry = _read_entry(archive, info, META_KEY, "meta", path)
    text = read_string(archive, entry, path)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: its metadata is not valid JSON ({type(exc).__name__}: {str(exc)[:80]})") from exc


def _read_entry(archive, info, name, role, path):
    """The :class:`Entry` of one zip entry, from its ``.npy`` header read with bounded reads; its
    dtype must suit ``role`` and its size in the zip directory must be the header's plus the
    array's bytes."""
    entry = read_header(archive, info, name, path)
    check_entry_dtype(entry, role, path)
    check_size(entry, path)
    return entry


def _architecture(model, required):
    """``model.get_config()``, or None when the model cannot describe itself (unless ``required``)."""
    describe = getattr(model, "get_config", None)
    if describe is None:
        if required:
            raise ConfigError(f"cannot save the architecture of a {type(model).__name__}: it is not an xpnn Module")
        return None
    try:
        return describe()
    except ConfigError:
        if required:
            raise
        return None


def _linear_weights(model):
    """The names and the parameter ids of ``model``'s Linear weights (what format version 1
    stored transposed)."""
    from ..nn.linear import Linear

    names, ids = set(), set()
    for prefix, module in model.named_modules():
        if isinstance(module, Linear):
            names.add(f"{prefix}.weight" if prefix else "weight")
            ids.add(id(module.weight))
    return names, ids


def _flipped(state, names):
    """``state`` with the arrays named in ``names`` transposed (C-contiguous copies)."""
    for name in names:
        if name in state:
            state[name] = np.ascontiguousarray(state[name].T)
    return state


def _flipped_optimizer(state, optimizer, ids):
    """An optimizer ``state_dict`` with the per-parameter arrays of the parameters in ``ids``
    transposed (0-d entries, such as a step count saved as an array, stay)."""
    if not ids:
        return state
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for index, values in state["state"].items():
        if id(params[int(index)]) in ids:
            for key, value in values.items():
                if isinstance(value, np.ndarray) and value.ndim == 2:
                    values[key] = np.ascontiguousarray(value.T)
    return state


def _kind_of(value):
    """The kind of a JSON leaf, for comparing saved values with live ones: ints and floats are
    both numbers (an lr given as 1 is saved as 1 and may be loaded where 0.5 was)."""
    if isinstance(value, bool):
        return "a bool"
    if isinstance(value, (int, float, np.integer, np.floating)):
        return "a finite number" if is_number(_plain(value)) else "a non-finite number"
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
        return {ARRAY_KEY: prefix}
    return _plain(obj)


def _plain(obj):
    """``obj`` with NumPy scalars as Python numbers (arrays stay, and fail JSON serialisation)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj.item() if isinstance(obj, np.generic) else obj


def _link_optimizer(state, entries):
    """The optimizer's saved state with the :class:`Entry` of each array in its place (arrays are
    only in the per-parameter state; the schema checked those references)."""
    if state is None:
        return None
    per_parameter = {
        index: {key: entries[value[ARRAY_KEY]] if isinstance(value, dict) else value for key, value in values.items()}
        for index, values in state["state"].items()
    }
    return {**state, "state": per_parameter}


def _unpack(obj, arrays):
    """``obj`` with each :class:`Entry` replaced by its array from ``arrays``."""
    if isinstance(obj, dict):
        return {k: _unpack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, arrays) for v in obj]
    return arrays[obj.name] if isinstance(obj, Entry) else obj


def _entries_in(obj):
    if isinstance(obj, dict):
        return [e for v in obj.values() for e in _entries_in(v)]
    if isinstance(obj, list):
        return [e for v in obj for e in _entries_in(v)]
    return [obj] if isinstance(obj, Entry) else []


def _names(names, limit=3):
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")

"""Checkpoints: one ``.npz`` file holding everything a run needs to continue bit for bit.

Layout: each array (model parameters and buffers, optimizer state such as
``optimizer/state/0/exp_avg``) is an entry of its own; everything else (hyper-parameters, scheduler
state, epoch, random generator states, the run's config and history) is one JSON string stored as a
0-d unicode array under ``__meta__``, where arrays appear as ``{"__array__": "<entry>"}``. So
``numpy.load(path, allow_pickle=False)`` reads a checkpoint, and loading one never runs pickled code.
Files are written atomically (temporary file, fsync, ``os.replace``).
"""

import json
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import random as xpnn_random
from ..errors import CheckpointError
from ..files import atomic_write

FORMAT = "xpnn-checkpoint"
VERSION = 1
META_KEY = "__meta__"
_ARRAY = "__array__"


def save_checkpoint(path, model, optimizer=None, scheduler=None, epoch=0, config=None, history=None, loader=None):
    """Write ``model`` (and the optimizer, scheduler, DataLoader shuffle state, global random state,
    ``config`` dict and ``history``) to ``path`` as one ``.npz`` file, atomically. ``epoch`` is the
    number of completed epochs, so ``fit(..., start_epoch=checkpoint.epoch)`` continues the run."""
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
        meta["scheduler"] = {"class": type(scheduler).__name__, "state": _pack(scheduler.state_dict(), "scheduler", arrays)}
    if loader is not None and hasattr(loader, "state_dict"):
        meta["loader"] = _pack(loader.state_dict(), "loader", arrays)
    try:
        text = json.dumps(meta)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot save checkpoint {path}: its metadata is not JSON-serialisable ({exc})") from exc
    arrays[META_KEY] = np.array(text)
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return Path(path)


@dataclass
class Checkpoint:
    """A checkpoint read by :func:`load_checkpoint`; :meth:`restore` puts it back onto live objects."""

    path: Path
    epoch: int
    config: dict
    history: dict
    model_class: str
    model_state: OrderedDict
    optimizer_class: str = None
    optimizer_state: dict = None
    scheduler_class: str = None
    scheduler_state: dict = None
    loader_state: dict = None
    rng_state: dict = None
    xpnn_version: str = None
    meta: dict = field(default=None, repr=False)

    def restore(self, model=None, optimizer=None, scheduler=None, loader=None, rng=True):
        """Load the saved state into whichever of ``model``, ``optimizer``, ``scheduler`` and
        ``loader`` are given, and (``rng``) the global random generator. Everything is checked
        first, so a checkpoint that does not fit raises :class:`CheckpointError` and changes nothing."""
        if model is not None:
            self._check_model(model)
        if optimizer is not None:
            self._check_optimizer(optimizer)
        if scheduler is not None:
            self._check_class("scheduler", scheduler, self.scheduler_class)
        if model is not None:
            model.load_state_dict(self.model_state)
        if optimizer is not None:
            optimizer.load_state_dict(self.optimizer_state)
        if scheduler is not None:
            scheduler.load_state_dict(self.scheduler_state)
        if loader is not None and self.loader_state is not None and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(self.loader_state)
        if rng and self.rng_state is not None:
            xpnn_random.set_rng_state(self.rng_state)
        return self

    def _describe(self):
        name = self.config.get("model")
        return f"checkpoint {self.path}" + (f" (a {name!r} model)" if name else f" (a {self.model_class})")

    def _check_model(self, model):
        expected = OrderedDict((n, p.shape) for n, p in model.named_parameters())
        expected.update((n, tuple(b.shape)) for n, b in model.named_buffers())
        found = {n: tuple(a.shape) for n, a in self.model_state.items()}
        missing = [n for n in expected if n not in found]
        unexpected = [n for n in found if n not in expected]
        wrong = [n for n in expected if n in found and tuple(expected[n]) != found[n]]
        if not (missing or unexpected or wrong):
            return
        problems = []
        if missing:
            problems.append(f"missing {_names(missing)}")
        if unexpected:
            problems.append(f"unexpected {_names(unexpected)}")
        if wrong:
            n = wrong[0]
            more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
            problems.append(f"{n} has shape {found[n]} in the checkpoint but {tuple(expected[n])} in the model{more}")
        raise CheckpointError(f"{self._describe()} does not fit this {type(model).__name__}: {'; '.join(problems)}")

    def _check_class(self, what, obj, saved):
        if saved is None:
            raise CheckpointError(f"checkpoint {self.path} holds no {what} state")
        if type(obj).__name__ != saved:
            raise CheckpointError(f"checkpoint {self.path} holds {what} state of a {saved}, not of a {type(obj).__name__}")

    def _check_optimizer(self, optimizer):
        self._check_class("optimizer", optimizer, self.optimizer_class)
        groups = self.optimizer_state["param_groups"]
        own = [len(g["params"]) for g in optimizer.param_groups]
        saved = [len(g["params"]) for g in groups]
        if own != saved:
            raise CheckpointError(
                f"checkpoint {self.path}: the optimizer was saved with parameter groups of sizes {saved}, this one has {own}"
            )
        params = [p for g in optimizer.param_groups for p in g["params"]]
        for index, entries in self.optimizer_state["state"].items():
            for key, value in entries.items():
                shape = params[int(index)].shape
                if isinstance(value, np.ndarray) and value.shape not in ((), shape):
                    raise CheckpointError(
                        f"checkpoint {self.path}: optimizer state {key!r} of parameter {index} has shape {value.shape}, expected {shape}"
                    )


def load_checkpoint(path):
    """Read a checkpoint written by :func:`save_checkpoint`; raises :class:`CheckpointError` for a
    missing, unreadable, truncated or foreign file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {path} is a directory, expected a .npz file (e.g. {path / 'model.npz'})")
    arrays = _read_npz(path)
    if META_KEY not in arrays:
        raise CheckpointError(f"{path} is not an xpnn checkpoint: it has no {META_KEY} entry")
    try:
        meta = json.loads(str(arrays.pop(META_KEY)[()]))
    except (ValueError, TypeError, IndexError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: its metadata is not valid JSON ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an xpnn checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {meta.get('version')}; this xpnn reads version {VERSION}")
    try:
        model_state = OrderedDict(_unpack(meta["model"]["state"], arrays))
        optimizer = meta.get("optimizer") or {}
        scheduler = meta.get("scheduler") or {}
        return Checkpoint(
            path=path,
            epoch=int(meta["epoch"]),
            config=meta.get("config") or {},
            history=meta.get("history") or {},
            model_class=meta["model"]["class"],
            model_state=model_state,
            optimizer_class=optimizer.get("class"),
            optimizer_state=_unpack(optimizer.get("state"), arrays),
            scheduler_class=scheduler.get("class"),
            scheduler_state=_unpack(scheduler.get("state"), arrays),
            loader_state=_unpack(meta.get("loader"), arrays),
            rng_state=meta.get("rng"),
            xpnn_version=meta.get("xpnn_version"),
            meta=meta,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path} is corrupt: missing or malformed entry {exc}") from exc


def restore(checkpoint, model=None, optimizer=None, scheduler=None, loader=None, rng=True):
    """Load ``checkpoint`` (a path or a :class:`Checkpoint`) into the given objects; returns the
    :class:`Checkpoint` (its ``epoch`` is where training continues)."""
    if not isinstance(checkpoint, Checkpoint):
        checkpoint = load_checkpoint(checkpoint)
    return checkpoint.restore(model, optimizer, scheduler, loader, rng)


def _read_npz(path):
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror or exc}") from exc
    if magic[:2] != b"PK":
        what = "it is empty" if not magic else "it is not an .npz (zip) archive"
        raise CheckpointError(f"cannot read checkpoint {path}: {what}")
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:  # zipfile, pickle and format errors all mean: not a readable .npz
        raise CheckpointError(f"cannot read checkpoint {path}: not a valid .npz file ({type(exc).__name__}: {exc})") from exc
    if not hasattr(data, "files"):
        raise CheckpointError(f"cannot read checkpoint {path}: it holds a single array (.npy), not an xpnn checkpoint (.npz)")
    try:
        with data:
            return {key: data[key] for key in data.files}
    except Exception as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: the file is truncated or corrupt ({type(exc).__name__}: {exc})") from exc


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
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _unpack(obj, arrays):
    if isinstance(obj, dict):
        if set(obj) == {_ARRAY}:
            return arrays[obj[_ARRAY]]
        return {k: _unpack(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v, arrays) for v in obj]
    return obj


def _names(names, limit=3):
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")

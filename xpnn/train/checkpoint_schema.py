"""What a checkpoint may hold: the format's names and the schema its metadata is checked against.

A checkpoint's metadata is one JSON document from a file that may be hostile (issue 14). Before
anything uses it, :func:`check_meta` checks every value a reader uses (keys, types, ranges, class
names, parameter indices) and collects the array references (``{"__array__": "<entry>"}``), each
used once and only where arrays belong: in the model's state and the optimizer's per-parameter
state. :func:`check_entry_dtype` holds the matching rule for the entries' ``.npy`` headers. The
checks are pure: they read no file and know no live model or optimizer (``checkpoint.py`` checks
a checkpoint against those when it restores one).
"""

import math
import re
import sys

from .. import random as xpnn_random
from ..errors import CheckpointError, ConfigError

FORMAT = "xpnn-checkpoint"
# Version 2 (issue 19): Linear weights are stored (out_features, in_features), PyTorch's layout;
# version 1 stored them (in, out), and its checkpoints are converted when read (checkpoint.py).
VERSION = 2
VERSIONS = (1, 2)  # the versions this xpnn reads
META_KEY = "__meta__"
ARRAY_KEY = "__array__"

MAX_EPOCH = 10**7
MAX_NAME = 100

_TOP_KEYS = {"format", "version", "xpnn_version", "epoch", "config", "history", "model", "rng", "optimizer", "scheduler", "loader"}
_REQUIRED = ("format", "version", "epoch", "model")
_ARRAY_KINDS = {"model": "fiub", "optimizer": "f"}  # integer and bool model entries are for integer buffers
_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")


def check_entry_dtype(entry, role, path):
    """An entry's dtype (and, for the metadata, its shape) must suit its ``role``: "meta" (a
    non-empty 0-d unicode string), "model" or "optimizer" (see ``_ARRAY_KINDS``)."""
    kinds = "U" if role == "meta" else _ARRAY_KINDS[role]
    if entry.dtype.kind not in kinds or (entry.dtype.kind == "f" and entry.dtype.itemsize > 8) or entry.dtype.hasobject:
        wanted = {"U": "a unicode string", "f": "a floating dtype (float16, float32, float64)"}.get(kinds, "a floating dtype, or an integer or bool dtype for integer buffers")
        raise CheckpointError(f"checkpoint {path} is corrupt: entry {entry.name!r} has dtype {entry.dtype}, expected {wanted}")
    if role == "meta" and (entry.shape != () or not entry.dtype.itemsize):
        raise CheckpointError(f"checkpoint {path} is corrupt: its metadata entry is a {entry.dtype} array of shape {entry.shape}, expected a non-empty string of shape ()")


def check_meta(meta, path):
    """Check every metadata value a reader uses; returns the array entries it refers to (entry
    name -> "model" or "optimizer")."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not an xpnn checkpoint (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if type(meta.get("version")) is not int or meta["version"] not in VERSIONS:
        raise CheckpointError(f"checkpoint {path} has format version {meta.get('version')!r}; this xpnn reads versions {', '.join(map(str, VERSIONS))}")
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
    keys = sorted(value) if isinstance(value, dict) else None
    if part == "model":
        _expect(keys in (["class", "state"], ["architecture", "class", "state"]), part, "a dict with keys 'class', 'state' (and 'architecture')", value)
    else:
        _expect(keys == ["class", "state"], part, "a dict with keys 'class' and 'state'", value)
    name = value["class"]
    _expect(isinstance(name, str) and name.isidentifier() and len(name) <= MAX_NAME, f"{part}['class']", "a class name", name)
    check_state(value["state"], f"{part}['state']", references)
    if "architecture" in value:
        _check_architecture(value["architecture"])


def _check_architecture(config):
    """The model's architecture (``nn.get_config``'s data): its structure, names, depth and size.
    Whether its classes are registered, and its arguments theirs, is checked when a model is built
    from it (``Checkpoint.build_model``): a checkpoint of a user's class stays readable (and
    restorable into a model built in code) where that class is not registered."""
    from ..nn.architecture import check_config

    try:
        check_config(config, registered_only=False, where="model['architecture']")
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from exc


def _check_history(history):
    _expect(isinstance(history, dict), "history", "a dict of lists", history)
    for key, values in history.items():
        _expect(isinstance(values, list), f"history[{key!r}]", "a list", values)
        for i, value in enumerate(values):
            _expect(value is None or is_number(value), f"history[{key!r}][{i}]", "a finite number or null", value)


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
                _expect(is_number(value), at, "an array or a finite number", value)


def _check_scheduler_state(state, where, references):
    _expect(isinstance(state, dict), where, "a dict", state)


def _reference(value, where, role, references):
    """``{"__array__": name}``: a reference to the array entry ``name``, used once."""
    name = value.get(ARRAY_KEY) if isinstance(value, dict) and len(value) == 1 else None
    _expect(isinstance(name, str) and name != META_KEY, where, f'{{"{ARRAY_KEY}": <entry name>}}', value)
    _expect(name not in references, where, "an array no other value refers to", name)
    references[name] = role


def _expect(ok, where, expected, found):
    if not ok:
        raise CheckpointError(mismatch(where, expected, found))


def mismatch(where, expected, found):
    """``"<where>: expected <expected>, found <found>"``, with ``found`` cut to 80 characters."""
    shown = repr(found)
    return f"{where}: expected {expected}, found {shown if len(shown) <= 80 else shown[:77] + '...'}"


def is_number(value):
    """A finite int or float (not a bool) that a float can hold."""
    if type(value) is int:
        return abs(value) <= sys.float_info.max
    return type(value) is float and math.isfinite(value)

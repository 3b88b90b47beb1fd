"""Optimizer base: parameter groups, per-parameter state that follows its parameter's device,
state_dict/load_state_dict in PyTorch's layout, and the rules hyper-parameters are checked by."""

import math
import numbers

import numpy as np

from .. import backend
from ..errors import ArgumentTypeError, CheckpointError, ConfigError
from ..nn.parameter import Parameter


def _number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _integer(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _finite(value):
    return _number(value) and math.isfinite(value)


# What each kind of hyper-parameter must be: (description for messages, test).
RULES = {
    "number": ("a finite number", _finite),
    "non_negative": ("a finite number >= 0", lambda v: _finite(v) and v >= 0),
    "positive": ("a finite number > 0", lambda v: _finite(v) and v > 0),
    "fraction": ("a number in (0, 1]", lambda v: _finite(v) and 0 < v <= 1),
    "unit": ("a number in [0, 1]", lambda v: _finite(v) and 0 <= v <= 1),
    "betas": ("a pair of numbers in [0, 1)", lambda v: isinstance(v, (tuple, list)) and len(v) == 2 and all(_finite(b) and 0 <= b < 1 for b in v)),
    "flag": ("True or False", lambda v: isinstance(v, (bool, np.bool_))),
    "count": ("an int >= 1", lambda v: _integer(v) and v >= 1),
    "iterations": ("an int >= 0", lambda v: _integer(v) and v >= 0),
    "epoch": ("an int >= -1", lambda v: _integer(v) and v >= -1),
    "below_one": ("a number in [0, 1)", lambda v: _finite(v) and 0 <= v < 1),
    "milestones": ("a list of ints >= 0", lambda v: isinstance(v, (list, tuple)) and all(_integer(m) and m >= 0 for m in v)),
    "anneal": ("'cos' or 'linear'", lambda v: v in ("cos", "linear")),
    "mode": ("'min' or 'max'", lambda v: v in ("min", "max")),
    "threshold_mode": ("'rel' or 'abs'", lambda v: v in ("rel", "abs")),
}


def check_values(where, rules, values, error=ConfigError):
    """Raise ``error`` naming the first of ``values`` that breaks its rule in ``rules`` (a dict of
    name -> a key of ``RULES``), with what was expected and what was found."""
    for key, rule in rules.items():
        description, test = RULES[rule]
        if not test(values[key]):
            raise error(f"{where}: expected {key} to be {description}, got {values[key]!r}")


class Optimizer:
    """Updates ``Parameter.data`` in place from ``Parameter.grad``.

    Subclasses define ``hyper`` (each hyper-parameter's rule in ``RULES``), ``_update(data, grad,
    state, group)`` and ``state_keys(group)`` (the entries a parameter's state holds once it has
    been updated; arrays of the parameter's shape, but ``step`` and those in ``scalar_state``). Every group's hyper-parameters are checked when it is added and when a state
    is loaded. A float16 parameter is updated in float32 arithmetic with float32 state, then
    rounded back: float16 cannot hold Adam's default eps of 1e-8 or the square of a small
    gradient, and its updates would divide by zero.
    """

    hyper = {}
    scalar_state = {}  # per-parameter state entries that are numbers, not arrays: name -> rule

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}
        self._check_hyper(type(self).__name__, self.defaults)
        params = list(params)
        if not params:
            raise ConfigError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def _check_hyper(self, where, group, error=ConfigError):
        """Raise ``error`` unless the hyper-parameters in ``group`` follow their rules."""
        check_values(where, self.hyper, group, error)

    def state_keys(self, group):
        """The names a parameter's state holds after an update with ``group``'s hyper-parameters."""
        raise NotImplementedError

    def _count_step(self, state, data, group, **initial):
        """PyTorch's lazy state, then the step count: on a parameter's first update (no ``step``
        yet) ``state`` gets ``step`` 0, the ``initial`` entries given, and an array of zeros like
        ``data`` for each other name in :meth:`state_keys` not already set; ``step`` then goes up
        by one."""
        if "step" not in state:
            xp = backend.namespace_of(data)
            state["step"] = 0
            state.update(initial)
            for key in sorted(self.state_keys(group) - set(state)):
                state[key] = xp.zeros_like(data)
        state["step"] += 1

    def add_param_group(self, group):
        """Add a dict with a "params" list and optional per-group hyper-parameters."""
        name = type(self).__name__
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if not isinstance(p, Parameter):
                raise ArgumentTypeError(f"{name}: expected xpnn.nn.Parameter objects, got {type(p).__name__}")
            if id(p) in seen:
                raise ConfigError(
                    f"{name}: expected each parameter once, got parameter {i} of group {len(self.param_groups)} a second time"
                )
            seen.add(id(p))
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._check_hyper(f"{name} param group {len(self.param_groups)}", group)
        self.param_groups.append(group)

    def zero_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.zero_grad()

    def step(self):
        """Apply one update to every parameter from its current gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                self._step_param(p, group)

    def _step_param(self, param, group):
        """``_update`` on the parameter's arrays, or on float32 copies of a float16 parameter's,
        whose result is rounded back into it."""
        state = self._state_for(param)
        data = param.data
        wide = backend.update_dtype(data)
        if wide == data.dtype:
            self._update(data, param.grad, state, group)
            return
        xp = backend.namespace_of(data)
        wide_data = xp.astype(data, wide)
        self._update(wide_data, xp.astype(param.grad, wide), state, group)
        data[...] = xp.astype(wide_data, data.dtype)

    def _update(self, data, grad, state, group):
        raise NotImplementedError

    def _state_for(self, param):
        """This parameter's state dict, moved to the parameter's device if it has moved."""
        state = self.state.setdefault(param, {})
        for key, value in state.items():
            if hasattr(value, "shape") and not backend.same_place(value, param.data):
                state[key] = self._state_array(value, param)
        return state

    @staticmethod
    def _state_array(value, param):
        """``value`` as a state array of ``param``: on its device, in ``backend.update_dtype``."""
        xp = backend.namespace_of(param.data)
        return backend.asarray(value, xp, backend.update_dtype(param.data), backend.resolve_device(param.data))

    def _all_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """{"class": the optimizer's class name, "state": {index: {name: host array or number}},
        "param_groups": [hyper-parameters and parameter indices]}: JSON-friendly apart from the
        host NumPy arrays."""
        index = {id(p): i for i, p in enumerate(self._all_params())}
        state = {}
        for p, entries in self.state.items():
            if entries:
                state[index[id(p)]] = {
                    k: np.array(backend.to_numpy(v), copy=True) if hasattr(v, "shape") else v for k, v in entries.items()
                }
        groups = []
        for group in self.param_groups:
            saved = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k != "params"}
            saved["params"] = [index[id(p)] for p in group["params"]]
            groups.append(saved)
        return {"class": type(self).__name__, "state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state saved by ``state_dict`` onto this optimizer's
        parameters (copies of its arrays), all or nothing: everything is checked
        (``check_state_dict``) before anything changes."""
        groups, saved_state = self._checked_state(state_dict)
        params = self._all_params()
        state = {
            params[i]: {k: _copy(self._state_array(v, params[i])) if hasattr(v, "shape") else v for k, v in entries.items()}
            for i, entries in saved_state.items()
        }
        for own, saved in zip(self.param_groups, groups):
            own.update(saved)
        self.state = state

    def check_state_dict(self, state_dict):
        """Raise a CheckpointError unless ``load_state_dict(state_dict)`` would succeed: the class
        (when saved), the groups' sizes and hyper-parameters (names, types, ranges), each state
        index, entry name, step count and array shape and dtype."""
        self._checked_state(state_dict)

    def _checked_state(self, state_dict):
        """(each group's hyper-parameters, {parameter index: state entries}) of a checked state."""
        name = type(self).__name__
        where = f"{name}.load_state_dict"
        keys = set(state_dict) if isinstance(state_dict, dict) else None
        if keys is None or not {"state", "param_groups"} <= keys <= {"class", "state", "param_groups"}:
            found = sorted(map(str, keys)) if keys is not None else type(state_dict).__name__
            raise CheckpointError(f"{where}: expected a dict with 'state' and 'param_groups' (and 'class'), got {found}")
        saved_class = state_dict.get("class", name)
        if saved_class != name:
            raise CheckpointError(f"{where}: expected a state_dict saved by {name}, got one saved by {saved_class}")
        groups = self._checked_groups(where, state_dict["param_groups"])
        return groups, self._checked_param_state(where, state_dict["state"], groups)

    def _checked_groups(self, where, saved):
        """Each saved group's hyper-parameters (tuples restored), checked against this
        optimizer's rules and groups."""
        fits = isinstance(saved, (list, tuple)) and len(saved) == len(self.param_groups) and all(
            isinstance(g, dict) and isinstance(g.get("params"), (list, tuple)) and len(g["params"]) == len(own["params"])
            for g, own in zip(saved, self.param_groups)
        )
        if not fits:
            raise CheckpointError(f"{where}: the saved parameter groups do not match this optimizer's")
        indices = [i for g in saved for i in g["params"]]
        if indices != list(range(len(indices))):
            raise CheckpointError(f"{where}: expected the groups' params to number the parameters 0..{len(indices) - 1} in order, got {indices}")
        groups = []
        for g, (group, own) in enumerate(zip(saved, self.param_groups)):
            values = {k: tuple(v) if isinstance(v, list) else v for k, v in group.items() if k != "params"}
            extra = (set(own) - set(self.hyper)) | {"initial_lr"}
            missing = sorted(set(self.hyper) - set(values))
            unknown = sorted(set(values) - set(self.hyper) - extra)
            if missing or unknown:
                raise CheckpointError(
                    f"{where}: param group {g} is missing {missing} and has unknown {unknown}; expected the hyper-parameters "
                    f"{sorted(self.hyper)} of {type(self).__name__}"
                )
            self._check_hyper(f"{where}: param group {g}", values, CheckpointError)
            if "initial_lr" in values:
                check_values(f"{where}: param group {g}", {"initial_lr": "non_negative"}, values, CheckpointError)
            groups.append(values)
        return groups

    def _checked_param_state(self, where, saved, groups):
        """{index: entries} of the saved per-parameter state, each checked against its parameter
        and the entries its group's hyper-parameters call for."""
        if not isinstance(saved, dict):
            raise CheckpointError(f"{where}: expected 'state' to be a dict of parameter index -> entries, got {type(saved).__name__}")
        params = self._all_params()
        group_of = [g for g, own in enumerate(self.param_groups) for _ in own["params"]]
        state = {}
        for key, entries in saved.items():
            index = _state_index(key, len(params))
            if index is None or index in state:
                raise CheckpointError(f"{where}: expected state indices of parameters 0..{len(params) - 1}, each once, got {key!r}")
            expected = self.state_keys(groups[group_of[index]])
            if not isinstance(entries, dict) or set(entries) != expected:
                found = sorted(map(str, entries)) if isinstance(entries, dict) else type(entries).__name__
                raise CheckpointError(f"{where}: expected the state of parameter {index} to hold {sorted(expected)}, got {found}")
            state[index] = {
                k: _checked_entry(f"{where}: state {k!r} of parameter {index}", k, v, params[index], self.scalar_state.get(k))
                for k, v in entries.items()
            }
        return state

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params")
        lines.append(")")
        return "\n".join(lines)


def _copy(array):
    """A copy of ``array``, so that a loaded state never shares memory with the dict it came from
    (PyTorch deep-copies it too)."""
    out = backend.namespace_of(array).empty_like(array)
    out[...] = array
    return out


def _state_index(key, count):
    """A saved state key (an int, or its string from JSON) as a parameter index, or None."""
    if isinstance(key, str) and key.isdigit():
        key = int(key)
    return int(key) if _integer(key) and 0 <= key < count else None


def _checked_entry(where, key, value, param, rule=None):
    """A saved state entry checked: ``step`` an int >= 0 (returned as an int), a scalar entry
    (``rule``, a key of ``RULES``) a number (or 0-d array) within its rule, returned as a float;
    any other a floating array of the parameter's shape."""
    if rule is not None:
        if hasattr(value, "shape") and value.shape == () and backend.dtype_name(value.dtype) in backend.FLOAT_DTYPES:
            value = float(value)
        description, test = RULES[rule]
        if not test(value):
            raise CheckpointError(f"{where}: expected {description}, got {value!r}")
        return float(value)
    if key == "step":
        if hasattr(value, "shape") and value.shape == () and backend.dtype_name(value.dtype).startswith(("int", "uint")):
            value = int(value)
        if not _integer(value) or value < 0:
            raise CheckpointError(f"{where}: expected an int >= 0, got {value!r}")
        return int(value)
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise CheckpointError(f"{where}: expected an array of shape {param.shape}, got {type(value).__name__}")
    if tuple(value.shape) != param.shape:
        raise CheckpointError(f"{where}: expected shape {param.shape}, got {tuple(value.shape)}")
    if backend.dtype_name(value.dtype) not in backend.FLOAT_DTYPES:
        raise CheckpointError(f"{where}: expected a floating dtype, got {backend.dtype_name(value.dtype)}")
    return value

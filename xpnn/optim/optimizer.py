"""Optimizer base: parameter groups, per-parameter state that follows its parameter's device,
and state_dict/load_state_dict in PyTorch's layout."""

import numpy as np

from .. import backend
from ..errors import ArgumentTypeError, CheckpointError, ConfigError
from ..nn.parameter import Parameter


class Optimizer:
    """Updates ``Parameter.data`` in place from ``Parameter.grad``; subclasses define ``_update``."""

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.param_groups = []
        self.state = {}
        params = list(params)
        if not params:
            raise ConfigError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, group):
        """Add a dict with a "params" list and optional per-group hyper-parameters."""
        group = dict(group)
        params = group["params"]
        params = [params] if isinstance(params, Parameter) else list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise ArgumentTypeError(f"{type(self).__name__}: expected xpnn.nn.Parameter objects, got {type(p).__name__}")
        known = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in known for p in params):
            raise ConfigError(f"{type(self).__name__}: a parameter appears in more than one group")
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self.param_groups.append(group)

    def zero_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.zero_grad()

    def step(self):
        """Apply one update to every parameter from its current gradient."""
        for group in self.param_groups:
            for p in group["params"]:
                self._update(p, self._state_for(p), group)

    def _update(self, param, state, group):
        raise NotImplementedError

    def _state_for(self, param):
        """This parameter's state dict, moved to the parameter's device/dtype if it has moved."""
        state = self.state.setdefault(param, {})
        for key, value in state.items():
            if hasattr(value, "shape") and not backend.same_place(value, param.data):
                state[key] = backend.asarray(value, backend.namespace_of(param.data), param.dtype, backend.resolve_device(param.data))
        return state

    def _all_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """{"state": {index: {name: host array or number}}, "param_groups": [hyper-parameters and
        parameter indices]}: JSON-friendly apart from the host NumPy arrays."""
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
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state saved by ``state_dict`` onto this optimizer's parameters."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups) or any(
            len(g["params"]) != len(own["params"]) for g, own in zip(groups, self.param_groups)
        ):
            raise CheckpointError(f"{type(self).__name__}.load_state_dict: the saved parameter groups do not match this optimizer's")
        params = self._all_params()
        for saved, own in zip(groups, self.param_groups):
            for key, value in saved.items():
                if key != "params":
                    own[key] = tuple(value) if isinstance(self.defaults.get(key), tuple) else value
        self.state = {}
        for i, entries in state_dict["state"].items():
            p = params[int(i)]
            xp = backend.namespace_of(p.data)
            restored = {}
            for key, value in entries.items():
                if hasattr(value, "shape") and value.shape == p.shape:
                    restored[key] = backend.asarray(value, xp, p.dtype, backend.resolve_device(p.data))
                elif hasattr(value, "shape") and value.shape != ():
                    raise CheckpointError(
                        f"{type(self).__name__}.load_state_dict: state {key!r} of parameter {i} has shape {value.shape}, expected {p.shape}"
                    )
                else:
                    restored[key] = value.item() if hasattr(value, "item") else value
            self.state[p] = restored

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params")
        lines.append(")")
        return "\n".join(lines)


def check_hyper(name, **values):
    """Reject negative learning rates, decay terms and epsilons with a message naming the value."""
    for key, value in values.items():
        if value < 0:
            raise ConfigError(f"{name}: expected {key} >= 0, got {value}")


def check_beta(name, key, value):
    if not 0 <= value < 1:
        raise ConfigError(f"{name}: expected {key} in [0, 1), got {value}")

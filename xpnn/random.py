"""The host random generator that seeds every backend identically (weights, shuffles, dropout)."""

import numpy as np

from .errors import ConfigError

_generator = np.random.default_rng(0)

_PCG64_STATE = "{'bit_generator': 'PCG64', 'state': {'state': int, 'inc': int}, 'has_uint32': 0 or 1, 'uinteger': int}"


def manual_seed(seed):
    """Reseed the default generator, like ``torch.manual_seed``; returns it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator():
    """The process-wide host generator used when a layer is given none."""
    return _generator


def get_rng_state():
    """The default generator's state as a JSON-serialisable dict (for checkpoints)."""
    return _generator.bit_generator.state


def set_rng_state(state):
    """Restore a state returned by :func:`get_rng_state`; anything else is a :class:`ConfigError`
    and leaves the generator as it was."""
    check_rng_state(state)
    _generator.bit_generator.state = state


def check_rng_state(state):
    """Raise :class:`ConfigError` unless ``state`` is a PCG64 state as :func:`get_rng_state` (and a
    DataLoader's ``state_dict``) return it. Checked field by field, because NumPy's own setter
    answers junk (it comes from checkpoints, which are input) with KeyError, TypeError or
    OverflowError, or silently ignores extra fields."""
    _check_fields(state, "state", ("bit_generator", "state", "has_uint32", "uinteger"))
    if state["bit_generator"] != "PCG64":
        _refuse("state['bit_generator']", state["bit_generator"], "'PCG64'")
    _check_fields(state["state"], "state['state']", ("state", "inc"))
    for key in ("state", "inc"):
        _check_int(state["state"][key], f"state['state'][{key!r}]", 128)
    _check_int(state["has_uint32"], "state['has_uint32']", 1)
    _check_int(state["uinteger"], "state['uinteger']", 32)


def _check_fields(value, where, keys):
    if not isinstance(value, dict) or sorted(value) != sorted(keys):
        _refuse(where, sorted(map(str, value)) if isinstance(value, dict) else value, f"a dict with keys {', '.join(keys)}")


def _check_int(value, where, bits):
    if type(value) is not int or not 0 <= value < 2**bits:
        _refuse(where, value, f"an integer in [0, 2**{bits})")


def _refuse(where, found, expected):
    shown = repr(found)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise ConfigError(f"random generator state: expected {where} to be {expected}, found {shown} (a valid state looks like {_PCG64_STATE})")

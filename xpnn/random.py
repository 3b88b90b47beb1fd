"""The host random generator that seeds every backend identically (weights, shuffles, dropout)."""

import numpy as np

_generator = np.random.default_rng(0)


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
    """Restore a state returned by :func:`get_rng_state`."""
    _generator.bit_generator.state = state

"""Weight initialisers: drawn on the host in float64 from a seeded generator, so every backend
and dtype starts from the same numbers."""

import math

from .. import random
from ..errors import ConfigError

INITS = ("he", "xavier", "normal")


def initial_weight(shape, fan_in, fan_out, init="he", generator=None):
    """Host float64 weights of ``shape``: "he" N(0, 2/fan_in) for ReLU nets, "xavier" uniform
    with variance 2/(fan_in+fan_out) for tanh/sigmoid nets, "normal" N(0, 0.01^2) as in the seeds."""
    rng = random.default_generator() if generator is None else generator
    if init == "he":
        return rng.normal(0.0, math.sqrt(2.0 / fan_in), size=shape)
    if init == "xavier":
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        return rng.uniform(-bound, bound, size=shape)
    if init == "normal":
        return rng.normal(0.0, 0.01, size=shape)
    raise ConfigError(f"init: expected one of {', '.join(INITS)}, got {init!r}")

"""Dropout and Dropout2d: zero activations at random while training, scaled to keep the mean."""

from .. import backend, random
from ..errors import ConfigError, ShapeError
from .module import Module


class _DropoutBase(Module):
    def __init__(self, p=0.5, generator=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ConfigError(f"{type(self).__name__}: expected a drop probability p in [0, 1), got {p}")
        self.p = float(p)
        self.generator = generator
        self._mask = None

    def _mask_shape(self, x):
        raise NotImplementedError

    def forward(self, x):
        if not self.training or self.p == 0:
            self._mask = None
            return x
        xp = backend.namespace_of(x)
        rng = random.default_generator() if self.generator is None else self.generator
        keep = backend.uniform(self._mask_shape(x), xp, x.dtype, rng, backend.device_of(x)) >= self.p
        self._mask = xp.astype(keep, x.dtype) * (1 / (1 - self.p))
        return x * self._mask

    def backward(self, grad):
        return grad if self._mask is None else grad * self._mask

    def extra_repr(self):
        return f"p={self.p}"


class Dropout(_DropoutBase):
    """Zero each element with probability ``p`` in training mode; identity in eval mode."""

    def _mask_shape(self, x):
        return tuple(x.shape)


class Dropout2d(_DropoutBase):
    """Zero whole channels of an (N, C, H, W) input with probability ``p``."""

    def _mask_shape(self, x):
        if x.ndim != 4:
            raise ShapeError(f"Dropout2d: expected a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        return (x.shape[0], x.shape[1], 1, 1)

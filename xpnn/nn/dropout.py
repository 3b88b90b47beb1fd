"""Dropout and Dropout2d: zero activations at random while training, scaled to keep the mean."""

from .. import backend, ops, random
from ..errors import ConfigError, ShapeError
from .module import Module


class _DropoutBase(Module):
    """Shared by Dropout and Dropout2d: a 0/1 mask scaled by 1/(1-p), drawn each training forward
    in the input's dtype (Dropout's in the input's memory order) and multiplied in (backward
    multiplies by the same mask), through ``ops.dropout``."""

    _cache = ("_backward",)  # what only backward needs: dropped by a forward under nn.no_grad()

    def __init__(self, p=0.5, generator=None):
        super().__init__()
        if not 0 <= p < 1:
            raise ConfigError(f"{type(self).__name__}: expected a drop probability p in [0, 1), got {p}")
        self.p = float(p)
        self.generator = generator
        self._backward = None

    def _mask_shape(self, x):
        raise NotImplementedError

    def forward(self, x):
        if not self.training or self.p == 0:
            self._backward = None
            return x
        xp = backend.namespace_of(x)
        rng = random.default_generator() if self.generator is None else self.generator
        shape = self._mask_shape(x)

        def draw(memory_shape):
            return backend.uniform(memory_shape, xp, x.dtype, rng, backend.device_of(x))

        # drawn in x's memory order (batch-last from Conv2d), so the products run through both
        # arrays in order and hand that layout on
        uniform = ops.layout.in_memory_order_of(x, draw, shape) if shape == tuple(x.shape) else draw(shape)
        y, self._backward = ops.dropout(x, uniform, self.p)
        return y

    def backward(self, grad):
        return grad if self._backward is None else self._backward(grad)

    def extra_repr(self):
        return f"p={self.p}"


class Dropout(_DropoutBase):
    """Zeroes each element with probability ``p`` while training, and scales the rest by 1/(1-p).

    The scaling keeps each element's expected value, so in eval mode (``model.eval()``) the layer
    is the identity. A new mask is drawn each training forward (uniform numbers on the input's
    device compared with ``p``) and backward multiplies the gradient by the same mask.

    Args:
        p: probability of zeroing an element, in [0, 1). Default 0.5.
        generator: a ``numpy.random.Generator`` for the masks (default: xpnn's, seeded by
            ``xpnn.manual_seed``).

    Shape:
        - Input: ``(*)``, any shape.
        - Output: ``(*)``, the input's shape.
    """

    def _mask_shape(self, x):
        return tuple(x.shape)


class Dropout2d(_DropoutBase):
    """Zeroes whole channels with probability ``p`` while training, and scales the rest by 1/(1-p).

    One draw per (image, channel) pair: neighbouring pixels of a feature map are strongly
    correlated, so dropping single pixels regularises convolutions little. Identity in eval mode.

    Args:
        p: probability of zeroing a channel, in [0, 1). Default 0.5.
        generator: a ``numpy.random.Generator`` for the masks (default: xpnn's, seeded by
            ``xpnn.manual_seed``).

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, H, W)``, the input's shape.
    """

    def _mask_shape(self, x):
        if x.ndim != 4:
            raise ShapeError(f"Dropout2d: expected a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        return (x.shape[0], x.shape[1], 1, 1)

"""Elementwise activations and the softmax layers; each caches what its backward needs."""

from .. import backend, functional as F, ops
from ..errors import ConfigError
from .module import Module


class ReLU(Module):
    """Applies the rectified linear unit elementwise: ``max(x, 0)``.

    The gradient passes where the input was positive. A NaN input gives a NaN output, as in
    PyTorch. The output keeps the input's memory order (a convolution's batch-last layout
    included); ``xpnn.ops.relu`` chooses the compiled or portable path.

    Shape:
        - Input: ``(*)``, any shape.
        - Output: ``(*)``, the input's shape.
    """

    def forward(self, x):
        y, self._backward = ops.relu(x)
        return y

    def backward(self, grad):
        return self._backward(grad)


class LeakyReLU(Module):
    """x where x > 0, else negative_slope * x (PyTorch's default slope 0.01); the slope per
    element is cached as an array, so forward and backward are one multiply each."""

    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = float(negative_slope)

    def forward(self, x):
        xp = backend.namespace_of(x)
        keep = xp.astype(x > 0, x.dtype)
        self._slope = keep + (1 - keep) * self.negative_slope  # exactly 1 or the slope
        return x * self._slope

    def backward(self, grad):
        return grad * self._slope

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Sigmoid(Module):
    """1 / (1 + exp(-x)) without overflow for any float; backward uses the cached output."""

    def forward(self, x):
        self._y = F.sigmoid(x)
        return self._y

    def backward(self, grad):
        return grad * self._y * (1 - self._y)


class Tanh(Module):
    """tanh(x); backward is grad * (1 - y^2)."""

    def forward(self, x):
        self._y = backend.namespace_of(x).tanh(x)
        return self._y

    def backward(self, grad):
        return grad * (1 - self._y * self._y)


class GELU(Module):
    """x * Phi(x); ``approximate="tanh"`` gives PyTorch's tanh approximation."""

    def __init__(self, approximate="none"):
        super().__init__()
        if approximate not in ("none", "tanh"):
            raise ConfigError(f"GELU: expected approximate 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def forward(self, x):
        self._x = x
        return F.gelu(x, self.approximate)

    def backward(self, grad):
        return grad * F.gelu_grad(self._x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


class Softmax(Module):
    """Softmax over ``dim`` (the last axis by default, so each row of a batch sums to one)."""

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        self._y = F.softmax(x, axis=self.dim)
        return self._y

    def backward(self, grad):
        xp = backend.namespace_of(grad)
        return self._y * (grad - xp.sum(grad * self._y, axis=self.dim, keepdims=True))

    def extra_repr(self):
        return f"dim={self.dim}"


class LogSoftmax(Module):
    """log(softmax(x)) over ``dim``, computed stably."""

    def __init__(self, dim=-1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        self._y = F.log_softmax(x, axis=self.dim)
        return self._y

    def backward(self, grad):
        xp = backend.namespace_of(grad)
        return grad - xp.exp(self._y) * xp.sum(grad, axis=self.dim, keepdims=True)

    def extra_repr(self):
        return f"dim={self.dim}"

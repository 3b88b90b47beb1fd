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

    _cache = ("_backward",)  # what only backward needs: dropped by a forward under nn.no_grad()

    def forward(self, x):
        y, self._backward = ops.relu(x)
        return y

    def backward(self, grad):
        return self._backward(grad)


class LeakyReLU(Module):
    """Applies the leaky rectified linear unit elementwise: ``x`` where ``x > 0``, else
    ``negative_slope * x``.

    Forward builds the per-element factor (exactly 1 or the slope) by arithmetic on a 0/1 mask,
    not ``where``, and caches it, so forward and backward are one multiply each. A NaN input
    gives a NaN output.

    Args:
        negative_slope: the factor applied where ``x <= 0``. Default 0.01, as in PyTorch.

    Shape:
        - Input: ``(*)``, any shape.
        - Output: ``(*)``, the input's shape.
    """

    _cache = ("_slope",)

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
    """Applies the logistic sigmoid elementwise: ``1 / (1 + exp(-x))``.

    Computed without overflow for any float (``exp`` is only taken of ``-|x|``); backward is
    ``grad * y * (1 - y)`` from the cached output.

    Shape:
        - Input: ``(*)``, any shape.
        - Output: ``(*)``, the input's shape, values in [0, 1].
    """

    _cache = ("_y",)

    def forward(self, x):
        self._y = F.sigmoid(x)
        return self._y

    def backward(self, grad):
        return grad * self._y * (1 - self._y)


class Tanh(Module):
    """Applies the hyperbolic tangent elementwise: ``tanh(x)``.

    Backward is ``grad * (1 - y^2)`` from the cached output.

    Shape:
        - Input: ``(*)``, any shape.
        - Output: ``(*)``, the input's shape, values in [-1, 1].
    """

    _cache = ("_y",)

    def forward(self, x):
        self._y = backend.namespace_of(x).tanh(x)
        return self._y

    def backward(self, grad):
        return grad * (1 - self._y * self._y)


class GELU(Module):
    """Applies the Gaussian error linear unit elementwise: ``x * Phi(x)``, Phi the standard
    normal CDF.

    The exact form evaluates ``erf`` portably (``xpnn.functional.erf``, relative error below
    1.2e-7, float32 round-off), since the Array API has no ``erf``. The input is cached and
    backward evaluates the derivative of the same form.

    Args:
        approximate: "none" (default) for the erf form, or "tanh" for PyTorch's approximation
            ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))``.

    Shape:
        - Input: ``(*)``, any shape.
        - Output: ``(*)``, the input's shape.
    """

    _cache = ("_x",)

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
    """Applies softmax along one dimension: ``exp(x_i) / sum_j exp(x_j)``.

    The input is shifted by its maximum along ``dim`` first, so large logits do not overflow.
    Backward is ``y * (grad - sum(grad * y))`` from the cached output. For a classifier's loss
    use CrossEntropyLoss on the logits instead: it fuses the log and stays accurate when a
    probability underflows.

    Args:
        dim: the dimension whose entries sum to one. Default -1, the last.

    Shape:
        - Input: ``(*)``, any shape.
        - Output: ``(*)``, the input's shape, values in [0, 1].
    """

    _cache = ("_y",)

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
    """Applies log(softmax(x)) along one dimension, computed as ``x - logsumexp(x)``.

    Stable for large logits (no softmax is formed and then logged). Its output is what NLLLoss
    expects; backward is ``grad - exp(y) * sum(grad)`` from the cached output.

    Args:
        dim: the dimension along which softmax is taken. Default -1, the last.

    Shape:
        - Input: ``(*)``, any shape.
        - Output: ``(*)``, the input's shape, values in [-inf, 0].
    """

    _cache = ("_y",)

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

"""Elementwise activations and the softmax layers; each caches what its backward needs."""

import math
import numbers

from .. import backend, functional as F, ops
from ..errors import ConfigError, DeviceError, DTypeError, ShapeError
from .module import Module
from .parameter import Parameter


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
    _given_mask = None

    def forward(self, x):
        mask, self._given_mask = self._given_mask, None
        if mask is not None and tuple(mask.shape) == tuple(x.shape):  # the layer before applied this ReLU (nn.Sequential's fusion)
            self._backward = ops.relu_mask_backward(mask, x.dtype)
            return x
        y, self._backward = ops.relu(x)
        return y

    def backward(self, grad):
        return self._backward(grad)

    def _adopt_rectified(self, mask):
        """Take the output of the layer before as already rectified, its kept values marked in
        the uint8 ``mask`` laid out like it: the next forward returns its input as it is, and
        backward applies the mask (``nn.Sequential`` fuses this way)."""
        self._given_mask = mask


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


# ---- issue 16: the activations PyTorch users reach for -------------------------------------------
# Each caches only its input (``_x``) and evaluates its derivative in backward, so an inference
# forward does no gradient work. Gradients at kinks follow PyTorch's kernels (noted per class).
# Every form avoids overflow: exp is taken of non-positive numbers only, products of a large input
# are bounded, so large finite inputs give finite outputs and no NumPy warnings.


def _number(where, name, value):
    """``value`` as a finite float, or a ConfigError naming the layer and argument."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{where}: expected {name} to be a finite number, got {value!r}")
    return float(value)


class _Elementwise(Module):
    """An activation applied elementwise to a floating input of any shape; the input is cached."""

    _cache = ("_x",)  # what only backward needs: dropped by a forward under nn.no_grad()

    def _check(self, x):
        """Raise unless ``x`` is an array of a floating dtype (on any backend)."""
        if not hasattr(x, "shape") or not hasattr(x, "dtype"):
            raise DeviceError(f"{self._name()}: expected an array, got {type(x).__name__}")
        name = backend.dtype_name(x.dtype)
        if name not in backend.FLOAT_DTYPES:
            raise DTypeError(f"{self._name()}: expected a floating input ({', '.join(backend.FLOAT_DTYPES)}), got {name}")
        return backend.namespace_of(x)

    def forward(self, x):
        xp = self._check(x)
        self._x = x
        return self._value(xp, x)

    def backward(self, grad):
        return grad * self._derivative(backend.namespace_of(self._x), self._x)

    def _value(self, xp, x):
        raise NotImplementedError

    def _derivative(self, xp, x):
        raise NotImplementedError


class ELU(_Elementwise):
    """Applies the exponential linear unit elementwise: ``x`` where ``x > 0``, else
    ``alpha * (exp(x) - 1)``.

    Computed as ``max(x, 0) + alpha * expm1(min(x, 0))``, exact near zero and free of overflow.
    The derivative is 1 where ``x > 0`` and ``alpha * exp(x)`` elsewhere (``alpha`` at 0, as in
    PyTorch).

    Args:
        alpha: the value the output approaches for large negative inputs is ``-alpha``.
            Default 1.0.

    Shape:
        - Input: ``(*)``, any shape, of a floating dtype.
        - Output: ``(*)``, the input's shape.
    """

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = _number("ELU", "alpha", alpha)

    def _value(self, xp, x):
        return xp.maximum(x, 0.0) + self.alpha * xp.expm1(xp.minimum(x, 0.0))

    def _derivative(self, xp, x):
        pos = xp.astype(x > 0, x.dtype)
        return pos + (1 - pos) * (self.alpha * xp.exp(xp.minimum(x, 0.0)))

    def extra_repr(self):
        return f"alpha={self.alpha}"


class SiLU(_Elementwise):
    """Applies the sigmoid linear unit (swish) elementwise: ``x * sigmoid(x)``.

    The sigmoid never overflows (``xpnn.functional.sigmoid``); the derivative is
    ``s * (1 + x * (1 - s))`` with ``s = sigmoid(x)``, PyTorch's form.

    Shape:
        - Input: ``(*)``, any shape, of a floating dtype.
        - Output: ``(*)``, the input's shape.
    """

    def _value(self, xp, x):
        return x * F.sigmoid(x)

    def _derivative(self, xp, x):
        s = F.sigmoid(x)
        return s * (1 + x * (1 - s))


class Softplus(_Elementwise):
    """Applies ``log(1 + exp(beta * x)) / beta`` elementwise, and ``x`` itself where
    ``beta * x > threshold``, as in PyTorch.

    The logarithm is evaluated as ``max(z, 0) + log1p(exp(-|z|))`` (``z = beta * x``) on an
    input first clamped to where the result is not already exactly linear or zero, so neither
    ``exp`` nor ``beta * x`` overflows for any input. The derivative is ``sigmoid(beta * x)``,
    and 1 where the output is linear.

    Args:
        beta: the sharpness, > 0. Default 1.0.
        threshold: above ``beta * x > threshold`` the output is ``x``. Default 20.0.

    Shape:
        - Input: ``(*)``, any shape, of a floating dtype.
        - Output: ``(*)``, the input's shape.
    """

    def __init__(self, beta=1.0, threshold=20.0):
        super().__init__()
        self.beta = _number("Softplus", "beta", beta)
        self.threshold = _number("Softplus", "threshold", threshold)
        if self.beta <= 0:
            raise ConfigError(f"Softplus: expected beta > 0, got {self.beta}")

    def _scaled(self, xp, x):
        """``(lower, 0/1 mask of beta * x > threshold, beta * clamp(x))``: the clamp keeps
        ``beta * x`` finite and decides the linear part exactly as ``beta * x > threshold`` does."""
        big = float(xp.finfo(x.dtype).max)
        upper = min((abs(self.threshold) + 1) / self.beta, big)  # beta * upper > threshold
        lower = max(-max(800.0, abs(self.threshold) + 1) / self.beta, -big)  # exp(beta * lower) is 0
        z = self.beta * xp.clip(x, min=lower, max=upper)
        return lower, xp.astype(z > self.threshold, x.dtype), z

    def _value(self, xp, x):
        # 0/1 multiplies, not where (slower on NumPy): both terms are finite where their factor is 0
        lower, linear, z = self._scaled(xp, x)
        soft = (xp.maximum(z, 0.0) + xp.log1p(xp.exp(-xp.abs(z)))) / self.beta
        return linear * xp.maximum(x, lower) + (1 - linear) * soft

    def _derivative(self, xp, x):
        _, linear, z = self._scaled(xp, x)
        return linear + (1 - linear) * F.sigmoid(z)

    def extra_repr(self):
        return f"beta={self.beta}, threshold={self.threshold}"


class Mish(_Elementwise):
    """Applies ``x * tanh(softplus(x))`` elementwise.

    softplus is the overflow-free ``xpnn.functional.softplus``, so large inputs of either sign
    give ``x`` or 0 without warnings. The derivative is ``t + x * sigmoid(x) * (1 - t^2)`` with
    ``t = tanh(softplus(x))``, PyTorch's form.

    Shape:
        - Input: ``(*)``, any shape, of a floating dtype.
        - Output: ``(*)``, the input's shape.
    """

    def _value(self, xp, x):
        return x * xp.tanh(F.softplus(x))

    def _derivative(self, xp, x):
        t = xp.tanh(F.softplus(x))
        return t + x * F.sigmoid(x) * (1 - t * t)


class Hardtanh(_Elementwise):
    """Clamps each element to ``[min_val, max_val]``.

    The gradient passes strictly inside the interval and is 0 at its ends and beyond, as in
    PyTorch.

    Args:
        min_val: the lower end. Default -1.0.
        max_val: the upper end, greater than ``min_val``. Default 1.0.

    Shape:
        - Input: ``(*)``, any shape, of a floating dtype.
        - Output: ``(*)``, the input's shape.
    """

    def __init__(self, min_val=-1.0, max_val=1.0):
        super().__init__()
        name = type(self).__name__
        self.min_val = _number(name, "min_val", min_val)
        self.max_val = _number(name, "max_val", max_val)
        if not self.max_val > self.min_val:
            raise ConfigError(f"{name}: expected max_val greater than min_val, got min_val={self.min_val}, max_val={self.max_val}")

    def _value(self, xp, x):
        return xp.clip(x, min=self.min_val, max=self.max_val)

    def _derivative(self, xp, x):
        return xp.astype((x > self.min_val) & (x < self.max_val), x.dtype)

    def extra_repr(self):
        return f"min_val={self.min_val}, max_val={self.max_val}"


class ReLU6(Hardtanh):
    """Applies ``min(max(x, 0), 6)`` elementwise: Hardtanh(0, 6), as in PyTorch (a subclass).

    The gradient is 1 strictly between 0 and 6 and 0 elsewhere, both ends included.

    Shape:
        - Input: ``(*)``, any shape, of a floating dtype.
        - Output: ``(*)``, the input's shape.
    """

    def __init__(self):
        super().__init__(0.0, 6.0)

    def extra_repr(self):
        return ""


class Hardswish(_Elementwise):
    """Applies ``x * relu6(x + 3) / 6`` elementwise.

    Computed as ``x * (relu6(x + 3) / 6)``, so an input near the dtype's largest value gives
    itself rather than overflowing (PyTorch's order of operations gives inf there). The derivative is 0 for ``x <= -3``, ``x / 3 + 1/2`` strictly between -3 and 3 and 1 for
    ``x >= 3``, as PyTorch's kernel gives at the kinks.

    Shape:
        - Input: ``(*)``, any shape, of a floating dtype.
        - Output: ``(*)``, the input's shape.
    """

    def _value(self, xp, x):
        return x * (xp.clip(x + 3.0, min=0.0, max=6.0) / 6.0)  # never x * 6: no overflow

    def _derivative(self, xp, x):
        inside = xp.astype((x > -3.0) & (x < 3.0), x.dtype)
        upper = xp.astype(x >= 3.0, x.dtype)
        return inside * (xp.clip(x, min=-3.0, max=3.0) / 3.0 + 0.5) + upper


class Softsign(_Elementwise):
    """Applies ``x / (1 + |x|)`` elementwise.

    The derivative ``1 / (1 + |x|)^2`` is formed as the square of ``1 / (1 + |x|)``, so it
    underflows to 0 rather than overflowing for large inputs.

    Shape:
        - Input: ``(*)``, any shape, of a floating dtype.
        - Output: ``(*)``, the input's shape, values in (-1, 1).
    """

    def _value(self, xp, x):
        return x / (1 + xp.abs(x))

    def _derivative(self, xp, x):
        d = 1 / (1 + xp.abs(x))
        return d * d


class PReLU(Module):
    """Applies the parametric rectified linear unit: ``x`` where ``x > 0``, else ``weight * x``,
    with a learned slope shared by all elements or one per channel (dimension 1), as in PyTorch.

    Forward caches the per-element factor (exactly 1 or the slope) and ``min(x, 0)``; backward
    returns ``grad * factor`` and adds ``sum(grad * min(x, 0))`` over every dimension but the
    channel one to ``weight.grad``. At ``x = 0`` the input gradient is the slope, PyTorch's
    convention.

    Args:
        num_parameters: 1 (one slope for all elements) or the number of channels of the input
            (its dimension 1). Default 1.
        init: the slopes' initial value. Default 0.25.
        dtype: float32 (default), float64 or float16.
        xp: the device or namespace to create the parameter on (default: NumPy).

    Shape:
        - Input: ``(*)`` with ``num_parameters == 1``; ``(N, C, *)`` with ``C == num_parameters``
          otherwise. An input of fewer than 2 dimensions has one channel.
        - Output: the input's shape.

    Attributes:
        weight: ``(num_parameters,)``, filled with ``init`` at first.
    """

    _cache = ("_factor", "_negative")  # what only backward needs: dropped by a forward under nn.no_grad()

    def __init__(self, num_parameters=1, init=0.25, dtype=None, xp=None):
        super().__init__(xp)
        if not isinstance(num_parameters, numbers.Integral) or isinstance(num_parameters, bool) or num_parameters < 1:
            raise ConfigError(f"PReLU: expected num_parameters to be a positive int, got {num_parameters!r}")
        self.num_parameters = int(num_parameters)
        self.init = _number("PReLU", "init", init)
        dtype = backend.resolve_dtype(dtype, self.xp, where="PReLU")
        self.weight = Parameter(self.xp.full((self.num_parameters,), self.init, dtype=dtype, device=self.device))
        self._factor = self._negative = None

    def _shape(self, x):
        """The shape the slopes broadcast to against ``x``."""
        where = self._name()
        backend.check_array(x, self.xp, where, self.weight.data.dtype, self.device)
        channels = x.shape[1] if x.ndim >= 2 else 1
        if x.ndim == 0 and self.num_parameters != 1:
            raise ShapeError(f"{where}: expected an input with {self.num_parameters} channels in dimension 1, got a 0-d input")
        if self.num_parameters != 1 and channels != self.num_parameters:
            raise ShapeError(f"{where}: expected an input with {self.num_parameters} channels in dimension 1, got shape {tuple(x.shape)}")
        if self.num_parameters == 1:
            return (1,) * x.ndim
        return (1, self.num_parameters) + (1,) * (x.ndim - 2)

    def forward(self, x):
        shape = self._shape(x)
        xp = self.xp
        slope = xp.reshape(self.weight.data, shape)
        keep = xp.astype(x > 0, x.dtype)
        self._factor = keep + (1 - keep) * slope  # exactly 1 or the slope
        self._negative = xp.minimum(x, 0.0)  # x where the slope applies, else 0
        return x * self._factor

    def backward(self, grad):
        self.backward_params(grad)
        return grad * self._factor

    def backward_params(self, grad):
        xp = self.xp
        g = grad * self._negative
        if self.num_parameters == 1:
            total = xp.reshape(xp.sum(g), (1,))
        else:
            total = xp.sum(g, axis=tuple(a for a in range(g.ndim) if a != 1))
        self.weight.accumulate_grad(total)

    def extra_repr(self):
        return f"num_parameters={self.num_parameters}"

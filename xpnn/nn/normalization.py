"""Per-sample normalisation: LayerNorm over trailing dimensions, GroupNorm over channel groups.

Both normalise each sample by its own mean and biased variance (no running statistics, the same in
training and eval mode), as in PyTorch, and share one backward: with ``x_hat = (x - mean) *
inv_std`` and ``g`` the gradient of ``x_hat``, the input gradient is ``(g - mean(g) - x_hat *
mean(g * x_hat)) * inv_std``, the means taken over each normalised set. (BatchNorm lives in
``nn/batchnorm.py``.)
"""

import numbers

from .. import backend
from ..errors import ConfigError, DTypeError, ShapeError
from .module import Module
from .parameter import Parameter


def _positive_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1


def _check_eps(name, eps):
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real) or not eps > 0:
        raise ConfigError(f"{name}: expected eps > 0, got {eps!r}")
    return float(eps)


def _normalise(xp, x, axes, eps):
    """(x_hat, inv_std) of ``x`` normalised over ``axes`` (biased variance)."""
    mean = xp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    var = xp.mean(centred * centred, axis=axes, keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + eps)
    return centred * inv_std, inv_std


def _normalise_backward(xp, grad, x_hat, inv_std, axes):
    """The input gradient of ``x_hat`` normalised over ``axes``, given ``grad`` of ``x_hat``."""
    mean_grad = xp.mean(grad, axis=axes, keepdims=True)
    mean_grad_x_hat = xp.mean(grad * x_hat, axis=axes, keepdims=True)
    return (grad - mean_grad - x_hat * mean_grad_x_hat) * inv_std


class LayerNorm(Module):
    """Applies layer normalisation over the trailing dimensions ``normalized_shape`` of each sample.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, the mean and biased variance taken over
    the last ``len(normalized_shape)`` dimensions of each sample, in training and eval mode
    alike (no running statistics), as in PyTorch.

    Args:
        normalized_shape: the trailing shape to normalise over: an int (the last dimension) or a
            tuple/list of positive ints.
        eps: added to the variance before its square root. Default 1e-5.
        elementwise_affine: learn an elementwise scale ``weight`` (ones at first) and, with
            ``bias``, shift ``bias`` (zeros at first). Default True.
        bias: learn the shift (with ``elementwise_affine``). Default True.
        dtype: float32 (default), float64 or float16.
        xp: the device or namespace to create the parameters on (default: NumPy).

    Shape:
        - Input: ``(*, *normalized_shape)``, any number of leading dimensions.
        - Output: the input's shape.

    Attributes:
        weight: ``normalized_shape``, or None without ``elementwise_affine``.
        bias: ``normalized_shape``, or None without ``elementwise_affine`` or ``bias``.
    """

    _cache = ("_x_hat", "_inv_std", "_axes")  # what only backward needs: dropped by a forward under nn.no_grad()

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, dtype=None, xp=None):
        super().__init__(xp)
        shape = (normalized_shape,) if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool) else normalized_shape
        if not isinstance(shape, (tuple, list)) or not shape or not all(_positive_int(d) for d in shape):
            raise ConfigError(f"LayerNorm: expected normalized_shape to be a positive int or a non-empty tuple of them, got {normalized_shape!r}")
        self.normalized_shape = tuple(int(d) for d in shape)
        self.eps = _check_eps("LayerNorm", eps)
        self.elementwise_affine = bool(elementwise_affine)
        dtype = backend.resolve_dtype(dtype, self.xp, where="LayerNorm")
        if self.elementwise_affine:
            self.weight = Parameter(self.xp.ones(self.normalized_shape, dtype=dtype, device=self.device))
            self.bias = Parameter(self.xp.zeros(self.normalized_shape, dtype=dtype, device=self.device)) if bias else None
        else:
            self.weight = self.bias = None
        self._x_hat = self._inv_std = self._axes = None

    def _where(self):
        return f"LayerNorm({self.extra_repr()})"

    def forward(self, x):
        where = self._where()
        dtype = self.weight.data.dtype if self.weight is not None else None
        backend.check_array(x, self.xp, where, dtype, self.device)
        if dtype is None and not self.xp.isdtype(x.dtype, "real floating"):
            raise DTypeError(f"{where}: expected a floating input, got dtype {backend.dtype_name(x.dtype)}")
        k = len(self.normalized_shape)
        if x.ndim < k or tuple(x.shape[x.ndim - k:]) != self.normalized_shape:
            trailing = ", ".join(str(d) for d in self.normalized_shape)
            raise ShapeError(f"{where}: expected input of shape (*, {trailing}), got {tuple(x.shape)}")
        xp = self.xp
        self._axes = tuple(range(x.ndim - k, x.ndim))
        self._x_hat, self._inv_std = _normalise(xp, x, self._axes, self.eps)
        if self.weight is None:
            return self._x_hat
        y = self._x_hat * self.weight.data
        return y if self.bias is None else y + self.bias.data

    def backward(self, grad):
        xp = self.xp
        x_hat = self._x_hat
        if self.weight is not None:
            lead = tuple(range(grad.ndim - len(self.normalized_shape)))
            self.weight.accumulate_grad(xp.sum(grad * x_hat, axis=lead) if lead else grad * x_hat)
            if self.bias is not None:
                self.bias.accumulate_grad(xp.sum(grad, axis=lead) if lead else xp.asarray(grad, copy=True))
            grad = grad * self.weight.data
        return _normalise_backward(xp, grad, x_hat, self._inv_std, self._axes)

    def extra_repr(self):
        shape = self.normalized_shape
        return f"{shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
    """Applies group normalisation: the channels of each sample are split into ``num_groups``
    groups, each normalised by its own mean and biased variance (over its channels and all
    positions), then scaled and shifted per channel; the same in training and eval mode, as in
    PyTorch. ``GroupNorm(1, C)`` normalises each sample over all of it (like LayerNorm over
    (C, *) with per-channel affine), ``GroupNorm(C, C)`` each channel (instance normalisation).

    Args:
        num_groups: the number of groups; must divide ``num_channels``.
        num_channels: C, the number of channels.
        eps: added to the variance before its square root. Default 1e-5.
        affine: learn a per-channel scale ``weight`` (ones at first) and shift ``bias`` (zeros
            at first). Default True.
        dtype: float32 (default), float64 or float16.
        xp: the device or namespace to create the parameters on (default: NumPy).

    Shape:
        - Input: ``(N, C, *)``: (N, C), (N, C, L), (N, C, H, W), ...
        - Output: the input's shape.

    Attributes:
        weight: ``(num_channels,)``, or None without ``affine``.
        bias: ``(num_channels,)``, or None without ``affine``.
    """

    _cache = ("_x_hat", "_inv_std", "_shape")  # what only backward needs: dropped by a forward under nn.no_grad()

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True, dtype=None, xp=None):
        super().__init__(xp)
        for name, value in (("num_groups", num_groups), ("num_channels", num_channels)):
            if not _positive_int(value):
                raise ConfigError(f"GroupNorm: expected {name} to be a positive int, got {value!r}")
        if num_channels % num_groups:
            raise ConfigError(f"GroupNorm: expected num_channels ({num_channels}) to be divisible by num_groups ({num_groups})")
        self.num_groups = int(num_groups)
        self.num_channels = int(num_channels)
        self.eps = _check_eps("GroupNorm", eps)
        self.affine = bool(affine)
        dtype = backend.resolve_dtype(dtype, self.xp, where="GroupNorm")
        if self.affine:
            self.weight = Parameter(self.xp.ones((self.num_channels,), dtype=dtype, device=self.device))
            self.bias = Parameter(self.xp.zeros((self.num_channels,), dtype=dtype, device=self.device))
        else:
            self.weight = self.bias = None
        self._x_hat = self._inv_std = self._shape = None

    def _where(self):
        return f"GroupNorm({self.extra_repr()})"

    def forward(self, x):
        where = self._where()
        dtype = self.weight.data.dtype if self.affine else None
        backend.check_array(x, self.xp, where, dtype, self.device)
        if dtype is None and not self.xp.isdtype(x.dtype, "real floating"):
            raise DTypeError(f"{where}: expected a floating input, got dtype {backend.dtype_name(x.dtype)}")
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ShapeError(f"{where}: expected input of shape (N, {self.num_channels}, *), got {tuple(x.shape)}")
        xp = self.xp
        self._shape = tuple(x.shape)
        grouped = xp.reshape(x, (x.shape[0], self.num_groups, -1))
        self._x_hat, self._inv_std = _normalise(xp, grouped, (2,), self.eps)
        x_hat = xp.reshape(self._x_hat, self._shape)
        if not self.affine:
            return x_hat
        channel = (1, self.num_channels) + (1,) * (x.ndim - 2)
        return x_hat * xp.reshape(self.weight.data, channel) + xp.reshape(self.bias.data, channel)

    def backward(self, grad):
        xp = self.xp
        shape = self._shape
        grouped = (shape[0], self.num_groups, -1)
        if self.affine:
            axes = (0,) + tuple(range(2, len(shape)))
            channel = (1, self.num_channels) + (1,) * (len(shape) - 2)
            x_hat = xp.reshape(self._x_hat, shape)
            self.weight.accumulate_grad(xp.sum(grad * x_hat, axis=axes))
            self.bias.accumulate_grad(xp.sum(grad, axis=axes))
            grad = grad * xp.reshape(self.weight.data, channel)
        dx = _normalise_backward(xp, xp.reshape(grad, grouped), self._x_hat, self._inv_std, (2,))
        return xp.reshape(dx, shape)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"

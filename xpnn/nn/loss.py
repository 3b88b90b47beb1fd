"""Losses: calling one returns a 0-d array on the input's device (no host sync); ``backward()``
returns the gradient with respect to the input."""

import math
import numbers

from .. import backend, functional as F, ops
from ..errors import ConfigError, DTypeError, ShapeError
from .module import Module

REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
    """Shared by the losses: the ``reduction`` and the upstream factor of ``backward(grad)``."""

    reductions = REDUCTIONS  # the reductions this loss accepts

    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in self.reductions:
            raise ConfigError(f"{type(self).__name__}: expected reduction in {self.reductions}, got {reduction!r}")
        self.reduction = reduction

    def forward(self, input, target):
        raise NotImplementedError

    def _reduce(self, xp, values, count):
        """Sum or average the per-element ``values`` over ``count`` elements (KLDivLoss's
        "batchmean" passes the batch size). The mean of no
        elements is refused (PyTorch returns NaN, which would pass for a diverged loss)."""
        if self.reduction == "none":
            return values
        if self.reduction in ("mean", "batchmean") and count == 0:
            raise ShapeError(f"{type(self).__name__}: cannot average over an empty input of shape {tuple(values.shape)}; "
                             f"expected at least one element (reduction 'sum' or 'none' accepts it)")
        total = xp.sum(values)
        return xp.asarray(total if self.reduction == "sum" else total / count)

    def _upstream(self, grad, count):
        """The factor each element's gradient is multiplied by: 1/count for the mean, the
        caller's ``grad`` (0-d, or per element with reduction "none") when given."""
        scale = 1 / count if self.reduction in ("mean", "batchmean") else 1.0
        if grad is None:
            return scale
        return grad * scale

    def _check_pair(self, input, target, same_shape=True):
        xp = backend.namespace_of(input)
        name = type(self).__name__
        if backend.dtype_name(input.dtype) not in backend.FLOAT_DTYPES:
            raise DTypeError(f"{name}: expected a floating input, got {backend.dtype_name(input.dtype)}")
        backend.check_array(target, xp, f"{name} target", input.dtype)
        if same_shape and tuple(target.shape) != tuple(input.shape):
            raise ShapeError(f"{name}: expected target of shape {tuple(input.shape)} like the input, got {tuple(target.shape)}")
        return xp

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


def _check_labels(name, xp, logits, target):
    """Validate integer class labels against (N, C) scores: shapes and dtype always, the label
    range where it costs no device sync (``ops.check_labels``)."""
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ShapeError(f"{name}: expected input of shape (N, C) with C >= 1 classes, got {tuple(logits.shape)}")
    backend.check_array(target, xp, f"{name} target")
    if not _is_integer(target):
        raise DTypeError(f"{name}: expected integer class labels, got {backend.dtype_name(target.dtype)} labels of shape {tuple(target.shape)}")
    if target.ndim != 1 or target.shape[0] != logits.shape[0]:
        raise ShapeError(f"{name}: expected class labels of shape ({logits.shape[0]},), got {tuple(target.shape)}")
    ops.check_labels(name, target, logits.shape[1])


def _is_integer(array):
    return backend.dtype_name(array.dtype).startswith(("int", "uint"))


class CrossEntropyLoss(_Loss):
    """Computes the cross-entropy between the softmax of logits and class targets.

    Fused with log-softmax: the loss of a row is ``-sum(t * log_softmax(x))`` for a target
    distribution ``t`` and its gradient ``softmax(x) * sum(t) - t``, so no probability is logged.
    With integer labels and no smoothing, ``xpnn.ops.softmax_cross_entropy`` computes it (one
    compiled pass each way on NumPy and CUDA). Probabilities below the dtype's smallest normal
    number are flushed to zero in the gradient: subnormal gradients slow every GEMM below. On
    NumPy a label outside [0, C) raises a ConfigError; elsewhere it is not checked (reading the
    labels back would stall the step) and, without label smoothing, gives its row a NaN loss.
    A 1-D target of another dtype raises a DTypeError (class labels must be integers), and the
    mean over an empty batch a ShapeError.
    There is no ``weight`` or ``ignore_index``.

    Args:
        reduction: "mean" (default) over the N rows, "sum", or "none" for the per-row losses.
        label_smoothing: in [0, 1]; the target becomes ``(1 - s) * t + s / C``, as in PyTorch.
            Default 0.

    Shape:
        - Input: ``(N, C)`` logits, of a floating dtype.
        - Target: ``(N,)`` integer class labels in [0, C), or ``(N, C)`` class probabilities
          (one-hot rows included) of the input's dtype.
        - Output: a 0-d array, or ``(N,)`` with ``reduction="none"``. ``backward(grad=None)``
          returns the ``(N, C)`` gradient of the logits; ``grad`` is the upstream gradient of
          the output (0-d, or ``(N,)`` with ``reduction="none"``), 1 when omitted.
    """

    _cache = ("_count", "_labels_backward", "_logp", "_dist")  # dropped by a forward under nn.no_grad()

    def __init__(self, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        if not 0 <= label_smoothing <= 1:
            raise ConfigError(f"CrossEntropyLoss: expected label_smoothing in [0, 1], got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)
        self._labels_backward = None

    def forward(self, input, target):
        xp = backend.namespace_of(input)
        if backend.dtype_name(input.dtype) not in backend.FLOAT_DTYPES:
            raise DTypeError(f"CrossEntropyLoss: expected floating logits, got {backend.dtype_name(input.dtype)}")
        self._count = input.shape[0]
        integer_labels = hasattr(target, "dtype") and (_is_integer(target) or target.ndim == 1)
        if integer_labels:
            _check_labels("CrossEntropyLoss", xp, input, target)
        else:
            if input.ndim != 2:
                raise ShapeError(f"CrossEntropyLoss: expected input of shape (N, C), got {tuple(input.shape)}")
            self._check_pair(input, target)
        if integer_labels and not self.label_smoothing:
            losses, self._labels_backward = ops.softmax_cross_entropy(input, target)
            return self._reduce(xp, losses, self._count)
        self._labels_backward = None
        dist = F.one_hot(target, input.shape[1], input.dtype) if integer_labels else target
        eps = self.label_smoothing
        if eps:
            dist = dist * (1 - eps) + eps / input.shape[1]
        logp = F.log_softmax(input, axis=1)
        self._logp, self._dist = logp, dist
        return self._reduce(xp, -xp.sum(dist * logp, axis=1), self._count)

    def backward(self, grad=None):
        up = self._upstream(grad, self._count)
        if self._labels_backward is not None:
            return self._labels_backward(up)
        xp = backend.namespace_of(self._logp)
        mass = xp.sum(self._dist, axis=1, keepdims=True)
        # Probabilities below the smallest normal float are flushed to zero: a confident model
        # otherwise feeds subnormal gradients to every GEMM below, which runs them many times slower.
        p = xp.exp(self._logp)
        p = xp.where(p < xp.finfo(p.dtype).smallest_normal, 0.0, p)
        g = p * mass - self._dist
        return g * (up[:, None] if self.reduction == "none" and grad is not None else up)

    def extra_repr(self):
        return f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"


class NLLLoss(_Loss):
    """Computes the negative log-likelihood of integer class labels given log-probabilities.

    The loss of row i is ``-input[i, target[i]]``; with LogSoftmax before it this is
    CrossEntropyLoss, computed in two layers. On NumPy a label outside [0, C) raises a
    ConfigError; elsewhere it gives its row a NaN loss. There is no ``weight`` or ``ignore_index``.

    Args:
        reduction: "mean" (default) over the N rows, "sum", or "none" for the per-row losses.

    Shape:
        - Input: ``(N, C)`` log-probabilities.
        - Target: ``(N,)`` integer class labels in [0, C).
        - Output: a 0-d array, or ``(N,)`` with ``reduction="none"``; ``backward(grad=None)``
          returns the ``(N, C)`` gradient of the input.
    """

    _cache = ("_target", "_shape", "_dtype")

    def forward(self, input, target):
        xp = backend.namespace_of(input)
        _check_labels("NLLLoss", xp, input, target)
        self._target, self._shape = target, tuple(input.shape)
        self._dtype = input.dtype
        classes = input.shape[1]
        picked = F.pick(input, xp.clip(target, 0, classes - 1))
        valid = (target >= 0) & (target < classes)  # an out-of-range label on a device gives NaN
        return self._reduce(xp, xp.where(valid, -picked, float("nan")), input.shape[0])

    def backward(self, grad=None):
        up = self._upstream(grad, self._shape[0])
        g = -F.one_hot(self._target, self._shape[1], self._dtype)
        return g * (up[:, None] if self.reduction == "none" and grad is not None else up)


class MSELoss(_Loss):
    """Computes the squared error ``(input - target)^2`` of every element, like ``torch.nn.MSELoss``.

    Args:
        reduction: "mean" (default) over all elements, "sum", or "none" for the elementwise
            errors.

    Shape:
        - Input: ``(*)``, any shape, of a floating dtype.
        - Target: ``(*)``, the input's shape and dtype.
        - Output: a 0-d array, or ``(*)`` with ``reduction="none"``; ``backward(grad=None)``
          returns the gradient of the input, ``2 * (input - target)`` times the upstream factor.
    """

    _cache = ("_diff", "_count")

    def forward(self, input, target):
        xp = self._check_pair(input, target)
        self._diff = input - target
        self._count = _numel(input)
        return self._reduce(xp, self._diff * self._diff, self._count)

    def backward(self, grad=None):
        return self._diff * (2 * self._upstream(grad, self._count))


class BCEWithLogitsLoss(_Loss):
    """Computes the binary cross-entropy between the sigmoid of logits and targets.

    Each element's loss is written ``max(x, 0) - x*y + log(1 + exp(-|x|))``, which never
    overflows and stays accurate for large ``|x|``, where BCELoss on a sigmoid would saturate;
    its gradient is ``sigmoid(x) - y``. There is no ``weight`` or ``pos_weight``.

    Args:
        reduction: "mean" (default) over all elements, "sum", or "none" for the elementwise
            losses.

    Shape:
        - Input: ``(*)`` logits, any shape, of a floating dtype.
        - Target: ``(*)``, the input's shape and dtype, values in [0, 1].
        - Output: a 0-d array, or ``(*)`` with ``reduction="none"``.
    """

    _cache = ("_x", "_y", "_count")

    def forward(self, input, target):
        xp = self._check_pair(input, target)
        self._x, self._y = input, target
        self._count = _numel(input)
        return self._reduce(xp, F.softplus(input) - input * target, self._count)

    def backward(self, grad=None):
        return (F.sigmoid(self._x) - self._y) * self._upstream(grad, self._count)


class BCELoss(_Loss):
    """Computes the binary cross-entropy between probabilities and targets:
    ``-(y * log(p) + (1 - y) * log(1 - p))``.

    Both logs are clamped at -100, as in PyTorch, so p = 0 or 1 gives a finite loss; backward
    divides by ``p * (1 - p)`` clamped at 1e-12 for the same reason. Prefer BCEWithLogitsLoss on
    logits: it stays accurate where a sigmoid saturates. There is no ``weight``.

    Args:
        reduction: "mean" (default) over all elements, "sum", or "none" for the elementwise
            losses.

    Shape:
        - Input: ``(*)`` probabilities in [0, 1], any shape, of a floating dtype.
        - Target: ``(*)``, the input's shape and dtype, values in [0, 1].
        - Output: a 0-d array, or ``(*)`` with ``reduction="none"``.
    """

    _cache = ("_p", "_y", "_count")

    def forward(self, input, target):
        xp = self._check_pair(input, target)
        self._p, self._y = input, target
        self._count = _numel(input)
        log_p = xp.clip(xp.log(input), min=-100.0)
        log_q = xp.clip(xp.log1p(-input), min=-100.0)
        return self._reduce(xp, -(target * log_p + (1 - target) * log_q), self._count)

    def backward(self, grad=None):
        xp = backend.namespace_of(self._p)
        p, y = self._p, self._y
        g = (p - y) / xp.clip(p * (1 - p), min=1e-12)
        return g * self._upstream(grad, self._count)


class L1Loss(_Loss):
    """Computes the absolute error ``|input - target|`` of every element, like ``torch.nn.L1Loss``.

    The gradient of the input is ``sign(input - target)`` (0 where they are equal, as in PyTorch)
    times the upstream factor.

    Args:
        reduction: "mean" (default) over all elements, "sum", or "none" for the elementwise
            errors.

    Shape:
        - Input: ``(*)``, any shape, of a floating dtype.
        - Target: ``(*)``, the input's shape and dtype.
        - Output: a 0-d array, or ``(*)`` with ``reduction="none"``; ``backward(grad=None)``
          returns the gradient of the input.
    """

    _cache = ("_diff", "_count")  # dropped by a forward under nn.no_grad()

    def forward(self, input, target):
        xp = self._check_pair(input, target)
        self._diff = input - target
        self._count = _numel(input)
        return self._reduce(xp, xp.abs(self._diff), self._count)

    def backward(self, grad=None):
        xp = backend.namespace_of(self._diff)
        return xp.sign(self._diff) * self._upstream(grad, self._count)


class _Clipped(_Loss):
    """Shared by SmoothL1Loss and HuberLoss: the Huber loss of ``d = input - target`` with the
    quadratic part on ``[-width, width]``, divided by ``divisor``, evaluated without a branch as
    ``|c| / divisor * (|d| - |c| / 2)`` with ``c = clip(d, -width, width)``; its derivative is
    ``c / divisor``. Nothing is squared outside the interval, so large differences cannot
    overflow. A width of 0 is L1Loss (derivative ``sign(d)``)."""

    _cache = ("_slope", "_count")  # dropped by a forward under nn.no_grad()
    _width = _divisor = 1.0

    def forward(self, input, target):
        xp = self._check_pair(input, target)
        diff = input - target
        self._count = _numel(input)
        if self._width == 0:
            self._slope = xp.sign(diff)
            return self._reduce(xp, xp.abs(diff), self._count)
        clipped = xp.clip(diff, min=-self._width, max=self._width)
        size = xp.abs(clipped)
        self._slope = clipped / self._divisor
        return self._reduce(xp, (size / self._divisor) * (xp.abs(diff) - 0.5 * size), self._count)

    def backward(self, grad=None):
        return self._slope * self._upstream(grad, self._count)


def _nonnegative(name, arg, value, strict=False):
    """``value`` as a float, or a ConfigError naming the loss: a finite number, >= 0 (> 0 when
    ``strict``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ConfigError(f"{name}: expected {arg} to be a finite number, got {value!r}")
    if value < 0 or (strict and value == 0):
        raise ConfigError(f"{name}: expected {arg} {'> 0' if strict else '>= 0'}, got {value}")
    return float(value)


class SmoothL1Loss(_Clipped):
    """Computes the smooth L1 error of every element, like ``torch.nn.SmoothL1Loss``:
    ``0.5 * d^2 / beta`` where ``|d| < beta`` and ``|d| - 0.5 * beta`` elsewhere, for
    ``d = input - target``.

    Evaluated without a branch as ``HuberLoss(delta=beta) / beta`` (nothing is squared where
    ``|d| >= beta``, so large errors cannot overflow). The gradient of the input is
    ``clip(d, -beta, beta) / beta``. With ``beta=0`` the loss is L1Loss (gradient ``sign(d)``),
    as in PyTorch.

    Args:
        reduction: "mean" (default) over all elements, "sum", or "none" for the elementwise
            errors.
        beta: where the loss changes from quadratic to linear, >= 0. Default 1.0.

    Shape:
        - Input: ``(*)``, any shape, of a floating dtype.
        - Target: ``(*)``, the input's shape and dtype.
        - Output: a 0-d array, or ``(*)`` with ``reduction="none"``; ``backward(grad=None)``
          returns the gradient of the input.
    """

    def __init__(self, reduction="mean", beta=1.0):
        super().__init__(reduction)
        self.beta = _nonnegative("SmoothL1Loss", "beta", beta)
        # |c| / beta is exactly 1 outside [-beta, beta], so the linear part is PyTorch's |d| - beta/2
        self._width = self._divisor = self.beta

    def extra_repr(self):
        return f"reduction={self.reduction!r}, beta={self.beta}"


class HuberLoss(_Clipped):
    """Computes the Huber error of every element, like ``torch.nn.HuberLoss``: ``0.5 * d^2``
    where ``|d| < delta`` and ``delta * (|d| - 0.5 * delta)`` elsewhere, for ``d = input - target``.

    Evaluated without a branch as ``|c| * (|d| - |c| / 2)`` with ``c = clip(d, -delta, delta)``,
    which is also the gradient of the input; nothing is squared where ``|d| >= delta``, so large
    errors cannot overflow. ``HuberLoss(delta=b)`` is ``b * SmoothL1Loss(beta=b)``.

    Args:
        reduction: "mean" (default) over all elements, "sum", or "none" for the elementwise
            errors.
        delta: where the loss changes from quadratic to linear, > 0. Default 1.0.

    Shape:
        - Input: ``(*)``, any shape, of a floating dtype.
        - Target: ``(*)``, the input's shape and dtype.
        - Output: a 0-d array, or ``(*)`` with ``reduction="none"``; ``backward(grad=None)``
          returns the gradient of the input.
    """

    def __init__(self, reduction="mean", delta=1.0):
        super().__init__(reduction)
        self.delta = _nonnegative("HuberLoss", "delta", delta, strict=True)
        self._width, self._divisor = self.delta, 1.0

    def extra_repr(self):
        return f"reduction={self.reduction!r}, delta={self.delta}"


class KLDivLoss(_Loss):
    """Computes the Kullback-Leibler divergence of a target distribution from log-probabilities,
    like ``torch.nn.KLDivLoss``: each element's loss is ``target * (log(target) - input)``, or
    ``exp(target) * (target - input)`` with ``log_target=True``.

    ``input`` holds log-probabilities (LogSoftmax's output). A zero target contributes 0 (PyTorch's
    ``xlogy``; no ``log(0)`` is taken) and a negative one NaN. The gradient of the input is
    ``-target`` (``-exp(target)`` with ``log_target``) times the upstream factor. Reduction
    "mean" divides by the number of elements, as PyTorch does (PyTorch also warns that this is
    not the KL divergence; xpnn does not); "batchmean" divides by the batch size, dimension 0,
    which gives the mathematical KL divergence of each row averaged over the batch.

    Args:
        reduction: "mean" (default) over all elements, "batchmean" (the sum divided by the
            batch size), "sum", or "none" for the elementwise losses.
        log_target: whether ``target`` holds log-probabilities. Default False.

    Shape:
        - Input: ``(*)`` log-probabilities, any shape, of a floating dtype.
        - Target: ``(*)``, the input's shape and dtype: probabilities, or log-probabilities with
          ``log_target=True``.
        - Output: a 0-d array, or ``(*)`` with ``reduction="none"``; ``backward(grad=None)``
          returns the gradient of the input.
    """

    reductions = ("mean", "batchmean", "sum", "none")
    _cache = ("_p", "_count")  # dropped by a forward under nn.no_grad()

    def __init__(self, reduction="mean", log_target=False):
        super().__init__(reduction)
        if not isinstance(log_target, bool):
            raise ConfigError(f"KLDivLoss: expected log_target to be a bool, got {log_target!r}")
        self.log_target = log_target

    def forward(self, input, target):
        xp = self._check_pair(input, target)
        if self.log_target:
            self._p = xp.exp(target)
            values = self._p * (target - input)
        else:
            self._p = target
            log_t = xp.log(xp.where(target > 0, target, 1.0))  # log(0) and log(<0) never taken
            t_log_t = xp.where(target < 0, float("nan"), target * log_t)
            values = t_log_t - target * input
        if self.reduction == "batchmean":
            self._count = input.shape[0] if input.ndim else 1
        else:
            self._count = _numel(input)
        return self._reduce(xp, values, self._count)

    def backward(self, grad=None):
        return -self._p * self._upstream(grad, self._count)

    def extra_repr(self):
        return f"reduction={self.reduction!r}, log_target={self.log_target}"


def _numel(array):
    n = 1
    for d in array.shape:
        n *= d
    return n

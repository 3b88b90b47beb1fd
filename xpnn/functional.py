"""Pure array functions shared by layers and losses (softmax, log-softmax, one-hot, GELU, ...), in
standard Array API calls only. The convolution windows (im2col, col2im and their geometry) live in
``xpnn.ops.windows``; the public ones are re-exported here, as PyTorch's ``unfold``/``fold`` are."""

import math

from . import backend


def sigmoid(x):
    """Logistic function that never overflows: exp is only taken of non-positive numbers. The
    numerator, exactly 1 for ``x >= 0`` and ``exp(x)`` below, is chosen by a 0/1 multiply, not
    ``where`` (several times slower on NumPy for an unpredictable sign)."""
    xp = backend.namespace_of(x)
    e = xp.exp(-xp.abs(x))
    upper = xp.astype(x >= 0, x.dtype)
    return (upper + (1 - upper) * e) / (1 + e)


def softmax(x, axis=-1):
    """Softmax along ``axis`` (each row of a batch sums to one), shifted by the max for stability."""
    xp = backend.namespace_of(x)
    e = xp.exp(x - xp.max(x, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """log(softmax(x)) computed as x - logsumexp(x), exact for large logits."""
    return x - logsumexp(x, axis=axis, keepdims=True)


def logsumexp(x, axis=-1, keepdims=False):
    """log(sum(exp(x))) along ``axis`` without overflow."""
    xp = backend.namespace_of(x)
    m = xp.max(x, axis=axis, keepdims=True)
    out = m + xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else xp.squeeze(out, axis=axis)


def softplus(x):
    """log(1 + exp(x)) without overflow for any float."""
    xp = backend.namespace_of(x)
    return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))


def one_hot(labels, num_classes, dtype=None):
    """(N,) integer labels as an (N, num_classes) matrix of zeros and ones."""
    xp = backend.namespace_of(labels)
    dtype = xp.float32 if dtype is None else dtype
    classes = xp.arange(num_classes, dtype=labels.dtype, device=backend.device_of(labels))
    return xp.astype(labels[:, None] == classes[None, :], dtype)


def pick(values, labels):
    """values[i, labels[i]] for a 2-D ``values``, as a gather on the flattened array."""
    xp = backend.namespace_of(values)
    n, c = values.shape
    flat = xp.arange(n, dtype=labels.dtype, device=backend.device_of(labels)) * c + labels
    return xp.take(xp.reshape(values, (-1,)), flat)


def erf(x):
    """Error function, portable (the Array API has none): Numerical Recipes' erfc Chebyshev fit,
    relative error below 1.2e-7 everywhere, i.e. float32 round-off."""
    xp = backend.namespace_of(x)
    z = xp.abs(x)
    t = 1 / (1 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (
        0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    erfc = t * xp.exp(poly)
    return xp.where(x >= 0, 1 - erfc, erfc - 1)


def gelu(x, approximate="none"):
    """GELU: x * Phi(x), exactly (erf) or with PyTorch's tanh approximation."""
    xp = backend.namespace_of(x)
    if approximate == "tanh":
        return 0.5 * x * (1 + xp.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x * x * x)))
    return 0.5 * x * (1 + erf(x * (1 / math.sqrt(2))))


def gelu_grad(x, approximate="none"):
    """d gelu(x) / dx, for the same ``approximate`` mode."""
    xp = backend.namespace_of(x)
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)
        inner = k * (x + 0.044715 * x * x * x)
        th = xp.tanh(inner)
        return 0.5 * (1 + th) + 0.5 * x * (1 - th * th) * k * (1 + 3 * 0.044715 * x * x)
    cdf = 0.5 * (1 + erf(x * (1 / math.sqrt(2))))
    pdf = xp.exp(-0.5 * x * x) * (1 / math.sqrt(2 * math.pi))
    return cdf + x * pdf


from .ops.windows import col2im, conv_output_size, im2col  # noqa: E402  (ops.loss imports this module)

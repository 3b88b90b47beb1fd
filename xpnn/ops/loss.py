"""Softmax cross-entropy with integer labels: one door, :func:`softmax_cross_entropy`, returning
the per-row losses and their backward.

Paths: on NumPy one compiled pass each way (``xpnn.kernels.numba_losses``), on CUDA one kernel
launch each way (``xpnn.kernels.cuda_losses``); the portable formula through ``log_softmax``
elsewhere and for float16. All of them flush probabilities below the smallest normal number to
zero: a confident model otherwise feeds subnormal gradients to every GEMM below, which runs them
many times slower."""

from .. import backend, functional as F
from ..errors import ConfigError


def check_labels(name, labels, classes):
    """Raise a ConfigError naming the first class label outside [0, classes), where checking is
    free: on NumPy, whose arrays are in host memory. On a device, reading the labels back would
    stall every step; there an out-of-range label gives its row a NaN loss instead, which the
    training loop's non-finite check reports."""
    xp = backend.namespace_of(labels)
    if backend.fast_path(xp) != "numba" or labels.shape[0] == 0:
        return
    low, high = int(xp.min(labels)), int(xp.max(labels))
    if low < 0 or high >= classes:
        raise ConfigError(f"{name}: expected class labels in [0, {classes - 1}], got {low if low < 0 else high}")


def softmax_cross_entropy(logits, labels):
    """``(losses, backward)`` for (N, C) float logits and (N,) integer labels: the (N,) losses
    ``logsumexp(row) - row[label]`` and ``backward(scale)``, the logits' gradient
    ``(softmax - one_hot) * scale`` for a number or one factor per row."""
    xp = backend.namespace_of(logits)
    path = backend.fast_path(xp)
    if path != "portable" and backend.kernel_dtype(logits):
        logits = backend.c_contiguous(logits)
        return softmax_cross_entropy_numba(logits, labels) if path == "numba" else softmax_cross_entropy_cuda(logits, labels)
    return softmax_cross_entropy_portable(logits, labels)


def softmax_cross_entropy_portable(logits, labels):
    """The formula in Array API calls, through ``log_softmax``; out-of-range labels give NaN rows."""
    xp = backend.namespace_of(logits)
    classes = logits.shape[1]
    logp = F.log_softmax(logits, axis=1)
    picked = F.pick(logp, xp.clip(labels, 0, classes - 1))
    valid = (labels >= 0) & (labels < classes)
    losses = xp.where(valid, -picked, float("nan"))
    probs = xp.exp(logp)
    probs = xp.where(probs < xp.finfo(probs.dtype).smallest_normal, 0.0, probs)
    probs = xp.where(valid[:, None], probs, float("nan"))
    hits = F.one_hot(labels, classes, logits.dtype)

    def backward(scale):
        return (probs - hits) * _per_row(xp, scale)

    return losses, backward


def softmax_cross_entropy_numba(logits, labels):
    """One compiled pass forward (float64 row sums) and one backward, on NumPy."""
    from ..kernels import numba_losses

    losses, probs = numba_losses.softmax_cross_entropy(logits, labels)

    def backward(scale):
        return numba_losses.softmax_cross_entropy_backward(probs, labels, scale)

    return losses, backward


def softmax_cross_entropy_cuda(logits, labels, kernels=None):
    """One launch forward (a row per thread, float64 row sums) and one backward, on CUDA."""
    from ..kernels import cuda_losses

    xp = backend.namespace_of(logits)
    labels = backend.c_contiguous(xp.astype(labels, xp.int64, copy=False))
    losses, probs = cuda_losses.softmax_cross_entropy(logits, labels, kernels)

    def backward(scale):
        rows = xp.broadcast_to(xp.asarray(scale, dtype=logits.dtype, device=backend.device_of(logits)), (logits.shape[0],))
        return cuda_losses.softmax_cross_entropy_backward(probs, labels, backend.c_contiguous(rows), kernels)

    return losses, backward


def _per_row(xp, scale):
    """A scale factor as something that multiplies an (N, C) array row by row."""
    return scale[:, None] if hasattr(scale, "shape") and scale.ndim == 1 else scale

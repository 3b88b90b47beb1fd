"""Host-side wrappers of ``cuda/loss.cu``: softmax cross-entropy with integer labels, one row per
thread forward and one element per thread backward."""

import numpy as np

from .. import backend
from . import cuda_launch
from .cuda_launch import launch


def softmax_cross_entropy(logits, labels, kernels=None):
    """(losses (N,), probabilities (N, C)) of C-contiguous float logits and int64 labels; a label
    outside [0, C) gives its row NaN."""
    xp = backend.namespace_of(logits)
    rows, classes = logits.shape
    losses = xp.empty((rows,), dtype=logits.dtype, device=backend.device_of(logits))
    probs = xp.empty_like(logits)
    t = np.dtype(backend.dtype_name(logits.dtype)).type
    launch(kernels or cuda_launch.default_kernels(), "loss", "xpnn_softmax_cross_entropy_forward", logits.dtype, rows, logits, labels, losses, probs,
           np.int64(rows), np.int32(classes), t(np.finfo(t).smallest_normal), t(np.nan))
    return losses, probs


def softmax_cross_entropy_backward(probs, labels, scale, kernels=None):
    """(probs - one_hot(labels)) * scale, ``scale`` a C-contiguous array of one factor per row."""
    xp = backend.namespace_of(probs)
    out = xp.empty_like(probs)
    launch(kernels or cuda_launch.default_kernels(), "loss", "xpnn_softmax_cross_entropy_backward", probs.dtype, probs.size, probs, labels, scale, out,
           np.int64(probs.size), np.int32(probs.shape[1]))
    return out

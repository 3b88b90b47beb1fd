"""Softmax cross-entropy with integer labels for NumPy, compiled by Numba: one pass over each row
of logits gives its loss and its probabilities, where the ufunc version makes a dozen calls on
small arrays whose overhead is most of a small model's loss time (``bench/NOTES.md``).
Single-threaded."""

import numba
import numpy as np


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _forward(logits, labels, tiny, losses, probs):
    n, classes = logits.shape
    for i in range(n):
        row = logits[i]
        top = row[0]
        for j in range(1, classes):
            if row[j] > top or row[j] != row[j]:  # a NaN logit makes the row NaN, as np.max does
                top = row[j]
        total = 0.0
        for j in range(classes):
            e = np.exp(row[j] - top)
            probs[i, j] = e
            total += e
        losses[i] = top + np.log(total) - row[labels[i]]
        for j in range(classes):
            p = probs[i, j] / total
            probs[i, j] = 0 if p < tiny else p


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _backward(probs, labels, scale, out):
    n, classes = probs.shape
    for i in range(n):
        for j in range(classes):
            out[i, j] = (probs[i, j] - (1 if j == labels[i] else 0)) * scale[i]


def softmax_cross_entropy(logits, labels):
    """(losses (N,), probabilities (N, C)) of C-contiguous float logits (N, C) and in-range
    integer labels (N,). The sums run in float64; probabilities below the smallest normal float
    are flushed to zero, as in ``CrossEntropyLoss`` (subnormal gradients slow every GEMM below)."""
    losses = np.empty(logits.shape[0], dtype=logits.dtype)
    probs = np.empty_like(logits)
    _forward(logits, labels, np.finfo(logits.dtype).smallest_normal, losses, probs)
    return losses, probs


def softmax_cross_entropy_backward(probs, labels, scale):
    """(probs - one_hot(labels)) * scale, ``scale`` a number or one factor per row."""
    rows = np.broadcast_to(np.asarray(scale, dtype=probs.dtype), (probs.shape[0],))
    out = np.empty_like(probs)
    _backward(probs, labels, np.ascontiguousarray(rows), out)
    return out

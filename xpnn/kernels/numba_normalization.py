"""Batch normalisation's training-mode forward and backward for NumPy, compiled by Numba: per
channel, two passes to read the statistics and one to write forward, one to read and one to
write backward, where the portable version makes
about ten whole-array passes each way with temporaries. Arrays are (A, C, B) C-contiguous views
(A = 1 and B = H*W*N for Conv2d's batch-last output), so each channel is A runs of B values that
stay in cache between its passes. Sums are float64 and may be reassociated (``fastmath``
``reassoc``), which lets LLVM vectorise them: the results differ from the portable version's by
round-off only. Channels are split over xpnn's threads (``xpnn.threads``); measurements in
``bench/NOTES.md``."""

import numba
import numpy as np

from .. import threads
from . import numba_elementwise

_FAST = {"reassoc"}


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _forward(x, weight, bias, eps, out, mean, var, mask, rectify):
    blocks, channels, run = x.shape
    count = blocks * run
    for c in range(channels):
        total = 0.0
        for a in range(blocks):
            row = x[a, c]
            for i in range(run):
                total += row[i]
        m = total / count
        squares = 0.0
        for a in range(blocks):
            row = x[a, c]
            for i in range(run):
                d = row[i] - m
                squares += d * d
        v = squares / count
        mean[c] = m
        var[c] = v
        scale = weight[c] / np.sqrt(v + eps)
        shift = bias[c] - m * scale
        for a in range(blocks):
            row = x[a, c]
            dst = out[a, c]
            for i in range(run):
                dst[i] = row[i] * scale + shift
            if rectify:  # a following ReLU, while the run is in cache
                numba_elementwise.rectify(dst, mask[a, c])


def forward(x, weight, bias, eps, relu=False):
    """``(y, mean, var)`` of a C-contiguous (A, C, B) ``x`` normalised per channel by the batch
    statistics (the biased variance) and scaled by ``weight``, shifted by ``bias`` (C values);
    ``mean`` and ``var`` as float64 (C,) arrays. With ``relu``, ``y`` is rectified as it is
    written and ``(y, mean, var, mask)`` comes back, the uint8 mask of the kept values."""
    out = np.empty_like(x)
    mask = np.empty(x.shape, dtype=np.uint8) if relu else numba_elementwise.unused_mask(3)
    mean = np.empty(x.shape[1])
    var = np.empty(x.shape[1])
    threads.run(lambda s, e: _forward(x[:, s:e], weight[s:e], bias[s:e], eps, out[:, s:e], mean[s:e], var[s:e],
                                      mask[:, s:e] if relu else mask, relu),
                threads.spans(x.shape[1], x.shape[0] * x.shape[2]))
    return (out, mean, var, mask) if relu else (out, mean, var)


@numba.njit(cache=True, nogil=True, fastmath=_FAST)
def _backward(x, grad, weight, mean, inv_std, out, grad_weight, grad_bias):
    blocks, channels, run = x.shape
    count = blocks * run
    for c in range(channels):
        m = mean[c]
        inv = inv_std[c]
        total = 0.0
        weighted = 0.0
        for a in range(blocks):
            row = x[a, c]
            g = grad[a, c]
            for i in range(run):
                total += g[i]
                weighted += g[i] * (row[i] - m)
        weighted *= inv  # sum of grad * x_hat
        grad_weight[c] = weighted
        grad_bias[c] = total
        k = weight[c] * inv
        mean_grad = total / count
        mean_grad_x_hat = weighted / count
        for a in range(blocks):
            row = x[a, c]
            g = grad[a, c]
            dst = out[a, c]
            for i in range(run):
                dst[i] = k * (g[i] - mean_grad - (row[i] - m) * inv * mean_grad_x_hat)


def backward(x, grad, weight, mean, inv_std):
    """``(grad_x, grad_weight, grad_bias)`` of :func:`forward` for the (A, C, B) output gradient
    ``grad`` laid out like ``x``; the parameter gradients as float64 (C,) arrays."""
    out = np.empty_like(x)
    grad_weight = np.empty(x.shape[1])
    grad_bias = np.empty(x.shape[1])
    threads.run(lambda s, e: _backward(x[:, s:e], grad[:, s:e], weight[s:e], mean[s:e], inv_std[s:e], out[:, s:e],
                                       grad_weight[s:e], grad_bias[s:e]),
                threads.spans(x.shape[1], x.shape[0] * x.shape[2]))
    return out, grad_weight, grad_bias

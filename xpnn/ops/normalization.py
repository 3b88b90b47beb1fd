"""Batch normalisation with the batch's own statistics (training mode): one door,
:func:`batch_norm_training`, returning the output, the statistics and the backward.

Paths: on NumPy, for float32/float64 inputs laid out as C-contiguous (A, C, B) blocks (Conv2d's
batch-last output, or a C-contiguous NCHW or (N, C) array), the Numba kernels
(``xpnn.kernels.numba_normalization``): per channel three passes forward, two backward;
elsewhere the portable Array API version beside them."""

import numpy as np

from .. import backend


def batch_norm_training(x, weight, bias, eps, relu=False):
    """``(y, mean, var, backward)`` for ``x`` (N, C, ...) normalised per channel over every axis
    but 1 by the batch mean and biased variance, then scaled by ``weight`` and shifted by ``bias``
    ((C,) arrays, or None for neither). ``y`` is laid out like ``x``; ``mean`` and ``var`` are (C,)
    in ``x``'s dtype; ``backward(grad)`` gives ``(grad_x, grad_weight, grad_bias)`` (None, None for
    the parameters without ``weight``). With ``relu`` (a following ReLU, ``nn.Sequential``'s
    fusion), ``(y rectified, mean, var, backward, mask)``: the uint8 mask of the kept values laid
    out like ``y``, or None where the compiled pass does not run (``y`` then as without it)."""
    xp = backend.namespace_of(x)
    blocks = _channel_blocks(x) if backend.fast_path(xp) == "numba" and backend.kernel_dtype(x) else None
    if blocks is not None:
        return batch_norm_training_numba(x, blocks, weight, bias, eps, relu)
    return (*batch_norm_training_portable(x, weight, bias, eps), None) if relu else batch_norm_training_portable(x, weight, bias, eps)


def _channel_blocks(x):
    """``(view, layout)``: ``x`` as a C-contiguous (A, C, B) view, each channel A runs of B values,
    and how to lay an array of that shape out as ``x`` ("batch-last" for (C, ..., N) memory, A = 1,
    or "batch-first" for C-contiguous memory); None when ``x`` is laid out neither way."""
    xp = backend.namespace_of(x)
    c = x.shape[1]
    batch_last = xp.permute_dims(x, (*range(1, x.ndim), 0))
    if backend.is_c_contiguous(batch_last):
        return xp.reshape(batch_last, (1, c, -1)), "batch-last"
    if backend.is_c_contiguous(x):
        return xp.reshape(x, (x.shape[0], c, -1)), "batch-first"
    return None


def _as_blocks(array, layout):
    """``array`` (N, C, ...) as C-contiguous (A, C, B) blocks of ``layout``, copied if need be."""
    c = array.shape[1]
    if layout == "batch-last":
        return np.ascontiguousarray(np.transpose(array, (*range(1, array.ndim), 0)).reshape(1, c, -1))
    return np.ascontiguousarray(array).reshape(array.shape[0], c, -1)


def _from_blocks(blocks, shape, layout):
    """(A, C, B) ``blocks`` as an array of ``shape`` (N, C, ...) laid out as ``layout``."""
    if layout == "batch-last":
        return np.transpose(blocks.reshape(*shape[1:], shape[0]), (len(shape) - 1, *range(len(shape) - 1)))
    return blocks.reshape(shape)


def batch_norm_training_numba(x, blocks, weight, bias, eps, relu=False):
    """:func:`batch_norm_training` on NumPy through ``numba_normalization``, for ``x``'s
    (A, C, B) ``blocks`` from ``_channel_blocks``; with ``relu``, the output rectified as it is
    written, and its mask."""
    from ..kernels import numba_normalization

    view, layout = blocks
    c, dtype = x.shape[1], x.dtype
    affine = weight is not None
    scale = weight if affine else np.ones(c, dtype=dtype)
    shift = bias if affine else np.zeros(c, dtype=dtype)
    out, mean, var, *mask = numba_normalization.forward(view, scale, shift, eps, relu)
    inv_std = 1.0 / np.sqrt(var + eps)

    def backward(grad):
        grad_x, grad_weight, grad_bias = numba_normalization.backward(view, _as_blocks(grad, layout), scale, mean, inv_std)
        grad_x = _from_blocks(grad_x, x.shape, layout)
        if not affine:
            return grad_x, None, None
        return grad_x, grad_weight.astype(dtype), grad_bias.astype(dtype)

    result = (_from_blocks(out, x.shape, layout), mean.astype(dtype), var.astype(dtype), backward)
    return (*result, _from_blocks(mask[0], x.shape, layout)) if relu else result


def batch_norm_training_portable(x, weight, bias, eps):
    """:func:`batch_norm_training` in Array API calls: the normalised input kept for backward."""
    xp = backend.namespace_of(x)
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, x.shape[1]) + (1,) * (x.ndim - 2)
    mean = xp.mean(x, axis=axes, keepdims=True)
    centred = x - mean
    var = xp.mean(centred * centred, axis=axes, keepdims=True)
    inv_std = 1.0 / xp.sqrt(var + eps)
    x_hat = centred * inv_std
    y = x_hat if weight is None else x_hat * xp.reshape(weight, shape) + xp.reshape(bias, shape)

    def backward(grad):
        grad_weight = grad_bias = None
        if weight is not None:
            grad_weight = xp.reshape(xp.sum(grad * x_hat, axis=axes), (-1,))
            grad_bias = xp.reshape(xp.sum(grad, axis=axes), (-1,))
            grad = grad * xp.reshape(weight, shape)
        mean_grad = xp.mean(grad, axis=axes, keepdims=True)
        mean_grad_x_hat = xp.mean(grad * x_hat, axis=axes, keepdims=True)
        return (grad - mean_grad - x_hat * mean_grad_x_hat) * inv_std, grad_weight, grad_bias

    return y, xp.reshape(mean, (-1,)), xp.reshape(var, (-1,)), backward

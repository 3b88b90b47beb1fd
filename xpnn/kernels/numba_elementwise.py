"""Fused NumPy elementwise kernels compiled by Numba: one pass over the arrays where the ufunc
version makes several (a dozen for Adam), each reading and writing whole arrays. ReLU and Adam
split their arrays over xpnn's threads (``xpnn.threads``); what the passes saved is in
``bench/NOTES.md``."""

import numba
import numpy as np

from .. import backend, threads


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, one_minus_beta1, beta2, one_minus_beta2, scale, shifted_eps, l2, decay):
    # Numba compiles a separate version for max_exp_avg_sq=None with the amsgrad branch removed.
    for i in range(param.size):
        g = grad[i]
        if l2 != 0:
            g = g + l2 * param[i]
        if decay != 1:
            param[i] = param[i] * decay
        m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i])
        v = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if max_exp_avg_sq is not None:
            v = max(max_exp_avg_sq[i], v)
            max_exp_avg_sq[i] = v
        param[i] -= m / (np.sqrt(v) + shifted_eps) * scale


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, scale, shifted_eps, l2, decay):
    """The Adam step of ``xpnn.ops.updates`` in one pass, with the same float operations in the
    same order as the portable version (so the results are identical). Arrays must be
    C-contiguous and of one float dtype; the scalars are rounded to it first, as NumPy does."""
    dtype = param.dtype.type
    flat = [None if a is None else a.reshape(-1) for a in (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)]
    scalars = (dtype(1 - beta1), dtype(beta2), dtype(1 - beta2), dtype(scale), dtype(shifted_eps), dtype(l2), dtype(decay))
    _over_threads(_adam, flat, scalars)


def _over_threads(kernel, flat, scalars=()):
    """``kernel(*flat, *scalars)`` over equal-length 1-D arrays (None passed as None), each of
    xpnn's threads (``threads.spans``) running it on its own range of the elements."""
    threads.run(lambda s, e: kernel(*[None if a is None else a[s:e] for a in flat], *scalars), threads.spans(flat[0].size))


def _flat_like(grad, mask):
    """``grad`` as a 1-D view in memory order when it is laid out as ``mask`` (a uint8 array of
    its shape) is, so one flat pass pairs their elements; else None."""
    if grad.strides != tuple(s * grad.itemsize for s in mask.strides):
        return None
    return backend.flat_in_memory_order(grad)


def unused_mask(ndim):
    """The mask argument of a loop told not to rectify: a one-element uint8 array of ``ndim``
    dimensions (the loop is compiled for one array type either way)."""
    return np.empty((1,) * ndim, dtype=np.uint8)


@numba.njit(error_model="numpy", cache=True, nogil=True, inline="always")
def rectify(values, mask):
    """ReLU in place over a run of ``values``, its uint8 ``mask`` marking the kept ones: the
    arithmetic of :func:`relu`, for the loops that fold a following ReLU into their last pass
    (``nn.Sequential``'s fusion). Inlined into loops of other modules, whose Numba cache does not
    see a change here: after editing it, delete ``xpnn/kernels/__pycache__``."""
    for t in range(values.shape[0]):
        v = values[t]
        keep = v > 0
        mask[t] = 1 if keep else 0
        values[t] = v if keep or v != v else 0  # NaN stays NaN, as with np.maximum


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _relu(x, out, mask):
    for i in range(x.size):
        v = x[i]
        keep = v > 0
        out[i] = v if keep or v != v else 0  # NaN stays NaN, as with np.maximum
        mask[i] = 1 if keep else 0


def relu(x):
    """``(max(x, 0), mask)`` in one pass, the uint8 0/1 mask marking x > 0 (a quarter of a
    float32 mask's memory traffic, each way), both laid out like ``x``, for a non-empty
    float32/float64 ``x`` without gaps in some axis order (``backend.flat_in_memory_order``)."""
    out, mask = np.empty_like(x), _uint8_like(x)
    flat = backend.flat_in_memory_order
    _over_threads(_relu, [flat(x), flat(out), flat(mask)])
    return out, mask


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _relu_backward(grad, mask, out):
    for i in range(grad.size):
        out[i] = grad[i] * mask[i]  # a multiply, as the portable version: a NaN gradient stays NaN


def relu_backward(grad, mask):
    """``grad * mask`` for ReLU's uint8 mask, laid out like the mask (the layout the forward
    handed on): in one pass when ``grad`` is laid out like it too, else NumPy's multiply.
    ``grad`` is float32 or float64 (``ops.activation`` sends other dtypes elsewhere)."""
    grad1 = _flat_like(grad, mask)
    if grad1 is None:
        return np.multiply(grad, mask, out=np.empty_like(mask, dtype=grad.dtype))
    out = np.empty_like(grad)
    flat = backend.flat_in_memory_order
    _over_threads(_relu_backward, [grad1, flat(mask), flat(out)])
    return out


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _dropout(x, uniform, p, scale, out, keep):
    zero = scale - scale
    for i in range(x.size):
        kept = uniform[i] >= p
        keep[i] = 1 if kept else 0
        out[i] = x[i] * (scale if kept else zero)  # a multiply, as the portable version: NaN stays NaN


def _uint8_like(x):
    """An uninitialised uint8 array of ``x``'s shape laid out like ``x`` (its strides in elements)."""
    mask = np.empty(x.shape, dtype=np.uint8)
    return np.lib.stride_tricks.as_strided(mask, strides=tuple(s // x.itemsize for s in x.strides))


def dropout(x, uniform, p):
    """``(x * mask, keep)`` in one pass: ``keep`` the uint8 0/1 marks of ``uniform >= p``, the
    mask ``1/(1-p)`` where kept and 0 elsewhere, in ``x``'s dtype; ``x`` (float32 or float64,
    without gaps in some axis order) and ``uniform`` (of x's dtype) laid out alike, the outputs
    too."""
    dtype = x.dtype.type
    out, keep = np.empty_like(x), _uint8_like(x)
    flat = backend.flat_in_memory_order
    p1, scale = dtype(p), dtype(1 / (1 - p))
    _over_threads(lambda x1, u1, out1, keep1: _dropout(x1, u1, p1, scale, out1, keep1), [flat(x), flat(uniform), flat(out), flat(keep)])
    return out, keep


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _dropout_backward(grad, keep, scale, out):
    zero = scale - scale
    for i in range(grad.size):
        out[i] = grad[i] * (scale if keep[i] else zero)


def dropout_backward(grad, keep, p, dtype):
    """``grad * mask`` for :func:`dropout`'s ``keep`` marks and ``p`` (the mask in ``dtype``, the
    forward input's): one pass when ``grad`` is of that dtype and laid out like ``keep``, else
    NumPy's multiply by the mask."""
    scale = np.dtype(dtype).type(1 / (1 - p))
    grad1 = _flat_like(grad, keep) if grad.dtype == dtype else None
    if grad1 is None:
        return grad * (keep.astype(dtype) * scale)
    out = np.empty_like(grad)
    flat = backend.flat_in_memory_order
    _over_threads(lambda g, k, o: _dropout_backward(g, k, scale, o), [grad1, flat(keep), flat(out)])
    return out


# The updates of Adadelta, Adagrad, NAdam and RAdam (``xpnn.ops.updates``): each the portable
# version's float operations in the same order, in one pass; scalars rounded to the arrays' dtype.


def _flat(*arrays):
    return [a.reshape(-1) for a in arrays]


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _adadelta(param, grad, square_avg, acc_delta, lr, rho, one_minus_rho, eps, weight_decay):
    for i in range(param.size):
        g = grad[i]
        if weight_decay != 0:
            g = g + weight_decay * param[i]
        s = square_avg[i] * rho + one_minus_rho * g * g
        square_avg[i] = s
        delta = np.sqrt(acc_delta[i] + eps) / np.sqrt(s + eps) * g
        acc_delta[i] = acc_delta[i] * rho + one_minus_rho * delta * delta
        param[i] -= lr * delta


def adadelta_update(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay):
    """The Adadelta step of ``xpnn.ops.updates`` in one pass (C-contiguous arrays of one float dtype)."""
    dtype = param.dtype.type
    _adadelta(*_flat(param, grad, square_avg, acc_delta), dtype(lr), dtype(rho), dtype(1 - rho), dtype(eps), dtype(weight_decay))


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _adagrad(param, grad, state_sum, clr, eps, weight_decay):
    for i in range(param.size):
        g = grad[i]
        if weight_decay != 0:
            g = g + weight_decay * param[i]
        s = state_sum[i] + g * g
        state_sum[i] = s
        param[i] -= clr * (g / (np.sqrt(s) + eps))


def adagrad_update(param, grad, state_sum, clr, eps, weight_decay):
    """The Adagrad step of ``xpnn.ops.updates`` in one pass (C-contiguous arrays of one float dtype)."""
    dtype = param.dtype.type
    _adagrad(*_flat(param, grad, state_sum), dtype(clr), dtype(eps), dtype(weight_decay))


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _nadam(param, grad, exp_avg, exp_avg_sq, one_minus_beta1, beta2, one_minus_beta2, eps, bias_correction2, grad_coef, avg_coef, l2, decay):
    for i in range(param.size):
        g = grad[i]
        if l2 != 0:
            g = g + l2 * param[i]
        if decay != 1:
            param[i] = param[i] * decay
        m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i])
        v = exp_avg_sq[i] * beta2 + one_minus_beta2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        denom = np.sqrt(v / bias_correction2) + eps
        p = param[i] - grad_coef * (g / denom)
        param[i] = p - avg_coef * (m / denom)


def nadam_update(param, grad, exp_avg, exp_avg_sq, beta1, beta2, eps, bias_correction2, grad_coef, avg_coef, l2, decay):
    """The NAdam step of ``xpnn.ops.updates`` in one pass (C-contiguous arrays of one float dtype)."""
    d = param.dtype.type
    _nadam(*_flat(param, grad, exp_avg, exp_avg_sq), d(1 - beta1), d(beta2), d(1 - beta2), d(eps), d(bias_correction2),
           d(grad_coef), d(avg_coef), d(l2), d(decay))


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _radam(param, grad, exp_avg, exp_avg_sq, one_minus_beta1, beta2, one_minus_beta2, eps, scale, adaptive, l2, decay):
    for i in range(param.size):
        g = grad[i]
        if l2 != 0:
            g = g + l2 * param[i]
        if decay != 1:
            param[i] = param[i] * decay
        m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i])
        v = exp_avg_sq[i] * beta2 + one_minus_beta2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if adaptive:
            param[i] -= scale * (m / (np.sqrt(v) + eps))
        else:
            param[i] -= scale * m


def radam_update(param, grad, exp_avg, exp_avg_sq, beta1, beta2, eps, scale, adaptive, l2, decay):
    """The RAdam step of ``xpnn.ops.updates`` in one pass (C-contiguous arrays of one float dtype)."""
    d = param.dtype.type
    _radam(*_flat(param, grad, exp_avg, exp_avg_sq), d(1 - beta1), d(beta2), d(1 - beta2), d(eps), d(scale), bool(adaptive), d(l2), d(decay))

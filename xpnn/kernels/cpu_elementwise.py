"""Fused NumPy elementwise kernels compiled by Numba: one pass over the arrays where the ufunc
version makes several (a dozen for Adam), each reading and writing whole arrays. Single-threaded,
for the reasons given in ``cpu_windows``."""

import numba
import numpy as np


@numba.njit(error_model="numpy", cache=True)
def _adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, one_minus_beta1, beta2, one_minus_beta2, scale, shifted_eps):
    # Numba compiles a separate version for max_exp_avg_sq=None with the amsgrad branch removed.
    for i in range(param.size):
        g = grad[i]
        m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i])
        v = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        if max_exp_avg_sq is not None:
            v = max(max_exp_avg_sq[i], v)
            max_exp_avg_sq[i] = v
        param[i] -= m / (np.sqrt(v) + shifted_eps) * scale


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, scale, shifted_eps):
    """The Adam step of ``xpnn.optim.updates`` in one pass, with the same float operations in the
    same order as the portable version (so the results are identical). Arrays must be
    C-contiguous and of one float dtype; the scalars are rounded to it first, as NumPy does."""
    dtype = param.dtype.type
    flat = [None if a is None else a.reshape(-1) for a in (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)]
    _adam(*flat, dtype(1 - beta1), dtype(beta2), dtype(1 - beta2), dtype(scale), dtype(shifted_eps))


@numba.njit(error_model="numpy", cache=True)
def _relu(x, out, mask):
    for i in range(x.size):
        v = x[i]
        keep = v > 0
        out[i] = v if keep or v != v else 0  # NaN stays NaN, as with np.maximum
        mask[i] = 1 if keep else 0


def memory_run(a):
    """A 1-D view of all of ``a``'s elements in memory order when ``a`` fills its memory without
    gaps in some axis order (C, batch-last, any permutation), else None."""
    order = sorted(range(a.ndim), key=lambda axis: -a.strides[axis])
    in_order = a.transpose(order)
    return in_order.reshape(-1) if in_order.flags.c_contiguous else None


def relu(x):
    """``(max(x, 0), mask)`` in one pass, the 0/1 mask marking x > 0, both laid out like ``x``: a
    third of the time of the ufunc version. None when ``x`` is not a gap-free float32/float64
    array (see :func:`memory_run`); the caller then uses the ufuncs."""
    flat = memory_run(x) if x.dtype in (np.float32, np.float64) and x.size else None
    if flat is None:
        return None
    out = np.empty_like(x)
    mask = np.empty_like(x)
    _relu(flat, memory_run(out), memory_run(mask))
    return out, mask

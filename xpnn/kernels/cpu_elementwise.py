"""Fused NumPy elementwise kernels compiled by Numba: one pass over the arrays where the ufunc
version makes a dozen, each reading and writing whole arrays. Single-threaded, for the reasons
given in ``cpu_windows``."""

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

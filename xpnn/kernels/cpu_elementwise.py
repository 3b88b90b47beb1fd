"""Fused NumPy elementwise kernels compiled by Numba: one parallel pass over the arrays where the
ufunc version makes a dozen, each reading and writing whole arrays."""

import numba
import numpy as np

_JIT = dict(error_model="numpy", cache=True)


@numba.njit(**_JIT)
def _adam(param, grad, exp_avg, exp_avg_sq, beta1, one_minus_beta1, beta2, one_minus_beta2, scale, shifted_eps):
    for i in range(param.size):
        g = grad[i]
        m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i])
        v = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g
        exp_avg[i] = m
        exp_avg_sq[i] = v
        param[i] -= m / (np.sqrt(v) + shifted_eps) * scale


@numba.njit(**_JIT)
def _adam_amsgrad(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, one_minus_beta1, beta2, one_minus_beta2, scale, shifted_eps):
    for i in range(param.size):
        g = grad[i]
        m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i])
        v = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g
        vmax = max(max_exp_avg_sq[i], v)
        exp_avg[i] = m
        exp_avg_sq[i] = v
        max_exp_avg_sq[i] = vmax
        param[i] -= m / (np.sqrt(vmax) + shifted_eps) * scale


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, scale, shifted_eps):
    """The Adam step of ``xpnn.optim.updates`` in one pass, with the same float operations in the
    same order as the portable version (so the results are identical). Arrays must be
    C-contiguous and of one float dtype; the scalars are rounded to it first, as NumPy does."""
    dtype = param.dtype.type
    flat = [a.reshape(-1) for a in (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq) if a is not None]
    consts = (dtype(beta1), dtype(1 - beta1), dtype(beta2), dtype(1 - beta2), dtype(scale), dtype(shifted_eps))
    (_adam if max_exp_avg_sq is None else _adam_amsgrad)(*flat, *consts)

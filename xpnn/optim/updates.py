"""Elementwise update rules that dominate an optimizer step: a portable Array API version and fused
kernels (Numba on NumPy, CuPy on CUDA) behind one function."""

import math

from .. import backend


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, lr, beta1, beta2, eps, step):
    """One Adam step in place: update the moments, then param -= lr * m_hat / (sqrt(v_hat) + eps).
    The bias corrections are folded into two scalars. ``max_exp_avg_sq`` is None unless amsgrad."""
    root_bc2 = math.sqrt(1 - beta2**step)
    scale = lr / (1 - beta1**step) * root_bc2
    shifted_eps = eps * root_bc2
    xp = backend.namespace_of(param)
    arrays = (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq)
    if backend.is_numpy(xp) and all(a is None or (a.flags.c_contiguous and a.dtype == param.dtype) for a in arrays):
        from ..kernels import cpu_elementwise

        cpu_elementwise.adam_update(*arrays, beta1, beta2, scale, shifted_eps)
    elif backend.is_cupy(xp):
        from ..kernels import elementwise

        elementwise.adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, scale, shifted_eps)
    else:
        _adam_portable(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, scale, shifted_eps)


def _adam_portable(param, grad, m, v, vmax, beta1, beta2, scale, shifted_eps):
    xp = backend.namespace_of(param)
    m += (1 - beta1) * (grad - m)
    v *= beta2
    v += (1 - beta2) * grad * grad
    if vmax is not None:
        vmax[...] = xp.maximum(vmax, v)
        v = vmax
    param -= scale * (m / (xp.sqrt(v) + shifted_eps))

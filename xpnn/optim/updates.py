"""Elementwise update rules that dominate an optimizer step: a portable Array API version, a NumPy
fast path (ufuncs writing into existing buffers, no temporaries) and a fused CuPy kernel, behind
one function."""

import math

import numpy as np

from .. import backend


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scratch, *, lr, beta1, beta2, eps, step):
    """One Adam step in place: update the moments, then param -= lr * m_hat / (sqrt(v_hat) + eps).
    The bias corrections are folded into two scalars so the update is five array passes.
    ``max_exp_avg_sq`` is None unless amsgrad; ``scratch`` is a same-shaped work buffer."""
    root_bc2 = math.sqrt(1 - beta2**step)
    scale = lr / (1 - beta1**step) * root_bc2
    shifted_eps = eps * root_bc2
    xp = backend.namespace_of(param)
    if backend.is_numpy(xp):
        _adam_numpy(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, scratch, beta1, beta2, scale, shifted_eps)
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


def _adam_numpy(param, grad, m, v, vmax, s, beta1, beta2, scale, shifted_eps):
    np.subtract(grad, m, out=s)
    s *= 1 - beta1
    m += s
    np.multiply(grad, grad, out=s)
    s *= 1 - beta2
    v *= beta2
    v += s
    if vmax is not None:
        np.maximum(vmax, v, out=vmax)
        v = vmax
    np.sqrt(v, out=s)
    s += shifted_eps
    np.divide(m, s, out=s)
    s *= scale
    param -= s

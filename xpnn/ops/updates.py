"""Optimizer updates that dominate a step: one door each, :func:`adam_update` and
:func:`sgd_update`, updating parameters and state in place.

Paths: on NumPy a compiled pass (``xpnn.kernels.numba_elementwise``, Adam only), on CUDA one
kernel launch per parameter (``xpnn.kernels.cuda_elementwise``), both for C-contiguous float32
or float64 arrays of one dtype; the portable Array API arithmetic otherwise. The compiled paths
do the portable version's float operations in the same order, so the results are identical."""

import math

from .. import backend


def _compiled_path(arrays):
    """The kernel kind for these update arrays, or "portable" when one is unfit for a kernel."""
    first = arrays[0]
    path = backend.fast_path(backend.namespace_of(first))
    if path == "portable" or not backend.kernel_dtype(first):
        return "portable"
    fit = all(a.dtype == first.dtype and backend.is_c_contiguous(a) for a in arrays if a is not None)
    return path if fit else "portable"


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, *, lr, beta1, beta2, eps, step, weight_decay=0.0, decoupled=False):
    """One Adam step in place: the weight decay (an L2 term added to the gradient, or with
    ``decoupled`` AdamW's ``param *= 1 - lr * weight_decay``), the moments, then
    ``param -= lr * m_hat / (sqrt(v_hat) + eps)`` with the bias corrections folded into two
    scalars. ``max_exp_avg_sq`` is None unless amsgrad."""
    root_bc2 = math.sqrt(1 - beta2**step)
    scale = lr / (1 - beta1**step) * root_bc2
    shifted_eps = eps * root_bc2
    l2 = 0.0 if decoupled else weight_decay
    decay = 1 - lr * weight_decay if decoupled else 1.0
    args = (param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, scale, shifted_eps, l2, decay)
    path = _compiled_path(args[:5])
    if path == "numba":
        from ..kernels import numba_elementwise

        numba_elementwise.adam_update(*args)
    elif path == "cuda":
        from ..kernels import cuda_elementwise

        cuda_elementwise.adam_update(*args)
    else:
        adam_update_portable(*args)


def adam_update_portable(param, grad, m, v, vmax, beta1, beta2, scale, shifted_eps, l2, decay):
    """:func:`adam_update` in Array API arithmetic, with its scalars already folded."""
    xp = backend.namespace_of(param)
    if l2:
        grad = grad + l2 * param
    if decay != 1:
        param *= decay
    m += (1 - beta1) * (grad - m)
    v *= beta2
    v += (1 - beta2) * grad * grad
    if vmax is not None:
        vmax[...] = xp.maximum(vmax, v)
        v = vmax
    param -= scale * (m / (xp.sqrt(v) + shifted_eps))


def sgd_update(param, grad, momentum_buffer, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, first=False):
    """One SGD step in place, PyTorch's rule: ``d = grad (+ weight_decay * param)``; with
    momentum the buffer becomes ``d`` on the ``first`` step and ``momentum * buffer +
    (1 - dampening) * d`` after, and ``d`` the buffer (Nesterov: ``d + momentum * buffer``);
    then ``param -= lr * d``. ``momentum_buffer`` (same shape as ``param``) is None without momentum."""
    args = (param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, first)
    if _compiled_path(args[:3]) == "cuda":
        from ..kernels import cuda_elementwise

        cuda_elementwise.sgd_update(*args)
    else:
        sgd_update_portable(*args)


def sgd_update_portable(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, first):
    """:func:`sgd_update` in Array API arithmetic."""
    d = grad
    if weight_decay:
        d = d + weight_decay * param
    if momentum:
        if first:
            momentum_buffer[...] = d
        else:
            momentum_buffer *= momentum
            momentum_buffer += (1 - dampening) * d
        d = d + momentum * momentum_buffer if nesterov else momentum_buffer
    param -= lr * d

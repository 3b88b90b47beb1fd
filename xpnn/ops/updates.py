"""Optimizer updates that dominate a step: one door each, :func:`adam_update`,
:func:`sgd_update`, :func:`adadelta_update`, :func:`adagrad_update`, :func:`nadam_update` and
:func:`radam_update`, updating parameters and state in place.

Paths: on NumPy a compiled pass (``xpnn.kernels.numba_elementwise``; all but SGD), on CUDA one
kernel launch per parameter (``xpnn.kernels.cuda_elementwise``; Adam and SGD), both for
C-contiguous float32 or float64 arrays of one dtype; the portable Array API arithmetic otherwise.
The compiled paths do the portable version's float operations in the same order, so the results
are identical."""

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


def _decay_and_moments(param, grad, m, v, beta1, beta2, l2, decay):
    """The start shared by the Adam family's portable updates: L2 decay folded into the gradient,
    decoupled decay applied to ``param``, then the two moments ``m``, ``v`` updated in place.
    Returns the gradient as decayed (NAdam's update reads it)."""
    if l2:
        grad = grad + l2 * param
    if decay != 1:
        param *= decay
    m += (1 - beta1) * (grad - m)
    v *= beta2
    v += (1 - beta2) * grad * grad
    return grad


def adam_update_portable(param, grad, m, v, vmax, beta1, beta2, scale, shifted_eps, l2, decay):
    """:func:`adam_update` in Array API arithmetic, with its scalars already folded."""
    xp = backend.namespace_of(param)
    _decay_and_moments(param, grad, m, v, beta1, beta2, l2, decay)
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


def _numba_or_portable(arrays, numba_name, portable, args):
    """Run ``numba_elementwise.<numba_name>(*args)`` where the arrays fit a Numba kernel, else
    ``portable(*args)``. (No CUDA kernel for these rules: CuPy runs the portable arithmetic.)"""
    if _compiled_path(arrays) == "numba":
        from ..kernels import numba_elementwise

        getattr(numba_elementwise, numba_name)(*args)
    else:
        portable(*args)


def adadelta_update(param, grad, square_avg, acc_delta, *, lr, rho, eps, weight_decay=0.0):
    """One Adadelta step in place, PyTorch's rule: ``g = grad (+ weight_decay * param)``,
    ``square_avg = rho * square_avg + (1 - rho) * g * g``, ``delta = sqrt(acc_delta + eps) /
    sqrt(square_avg + eps) * g``, ``acc_delta = rho * acc_delta + (1 - rho) * delta * delta``,
    ``param -= lr * delta``."""
    args = (param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay)
    _numba_or_portable(args[:4], "adadelta_update", adadelta_update_portable, args)


def adadelta_update_portable(param, grad, square_avg, acc_delta, lr, rho, eps, weight_decay):
    """:func:`adadelta_update` in Array API arithmetic."""
    xp = backend.namespace_of(param)
    if weight_decay:
        grad = grad + weight_decay * param
    square_avg *= rho
    square_avg += (1 - rho) * grad * grad
    delta = xp.sqrt(acc_delta + eps) / xp.sqrt(square_avg + eps) * grad
    acc_delta *= rho
    acc_delta += (1 - rho) * delta * delta
    param -= lr * delta


def adagrad_update(param, grad, state_sum, *, clr, eps, weight_decay=0.0):
    """One Adagrad step in place, PyTorch's rule: ``g = grad (+ weight_decay * param)``,
    ``state_sum += g * g``, ``param -= clr * g / (sqrt(state_sum) + eps)``, where ``clr`` is the
    step's decayed rate ``lr / (1 + (step - 1) * lr_decay)``."""
    args = (param, grad, state_sum, clr, eps, weight_decay)
    _numba_or_portable(args[:3], "adagrad_update", adagrad_update_portable, args)


def adagrad_update_portable(param, grad, state_sum, clr, eps, weight_decay):
    """:func:`adagrad_update` in Array API arithmetic."""
    xp = backend.namespace_of(param)
    if weight_decay:
        grad = grad + weight_decay * param
    state_sum += grad * grad
    param -= clr * (grad / (xp.sqrt(state_sum) + eps))


def nadam_update(param, grad, exp_avg, exp_avg_sq, *, beta1, beta2, eps, bias_correction2, grad_coef, avg_coef, weight_decay=0.0, lr=0.0, decoupled=False):
    """One NAdam step in place, PyTorch's rule with the momentum schedule's scalars computed by the
    caller: the weight decay (L2 on the gradient, or with ``decoupled`` ``param *= 1 - lr *
    weight_decay``), the moments, ``denom = sqrt(exp_avg_sq / bias_correction2) + eps``, then
    ``param -= grad_coef * g / denom + avg_coef * exp_avg / denom`` with ``grad_coef = lr * (1 -
    mu_t) / (1 - mu_product)`` and ``avg_coef = lr * mu_{t+1} / (1 - mu_product * mu_{t+1})``."""
    l2 = 0.0 if decoupled else weight_decay
    decay = 1 - lr * weight_decay if decoupled else 1.0
    args = (param, grad, exp_avg, exp_avg_sq, beta1, beta2, eps, bias_correction2, grad_coef, avg_coef, l2, decay)
    _numba_or_portable(args[:4], "nadam_update", nadam_update_portable, args)


def nadam_update_portable(param, grad, m, v, beta1, beta2, eps, bias_correction2, grad_coef, avg_coef, l2, decay):
    """:func:`nadam_update` in Array API arithmetic, with the weight decay folded into ``l2`` and
    ``decay``."""
    xp = backend.namespace_of(param)
    grad = _decay_and_moments(param, grad, m, v, beta1, beta2, l2, decay)
    denom = xp.sqrt(v / bias_correction2) + eps
    param -= grad_coef * (grad / denom)
    param -= avg_coef * (m / denom)


def radam_update(param, grad, exp_avg, exp_avg_sq, *, lr, beta1, beta2, eps, step, weight_decay=0.0, decoupled=False):
    """One RAdam step in place, PyTorch's rule: the weight decay (as in :func:`nadam_update`), the
    moments, then while the variance's length of the SMA ``rho_t`` is above 5 the rectified
    adaptive step ``param -= lr * rect * sqrt(bias_correction2) / bias_correction1 * exp_avg /
    (sqrt(exp_avg_sq) + eps)``, and before that the plain momentum step ``param -= lr /
    bias_correction1 * exp_avg``."""
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    rho_inf = 2 / (1 - beta2) - 1
    rho_t = rho_inf - 2 * step * beta2**step / bias_correction2
    adaptive = rho_t > 5.0
    if adaptive:
        rect = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
        scale = lr * rect * math.sqrt(bias_correction2) / bias_correction1
    else:
        scale = lr / bias_correction1
    l2 = 0.0 if decoupled else weight_decay
    decay = 1 - lr * weight_decay if decoupled else 1.0
    args = (param, grad, exp_avg, exp_avg_sq, beta1, beta2, eps, scale, adaptive, l2, decay)
    _numba_or_portable(args[:4], "radam_update", radam_update_portable, args)


def radam_update_portable(param, grad, m, v, beta1, beta2, eps, scale, adaptive, l2, decay):
    """:func:`radam_update` in Array API arithmetic, with its scalars already folded."""
    xp = backend.namespace_of(param)
    _decay_and_moments(param, grad, m, v, beta1, beta2, l2, decay)
    if adaptive:
        param -= scale * (m / (xp.sqrt(v) + eps))
    else:
        param -= scale * m

"""Host-side wrappers of ``cuda/activation.cu`` and ``cuda/updates.cu``: ReLU and the optimizer
updates, one launch each over arrays walked in memory order. As in ``cuda_windows``, kernels come
from a kernel library (CuPy's by default) so the tests can run them on the CPU."""

import numpy as np

from .. import backend
from . import cuda_launch
from .cuda_launch import launch


def _flat(a):
    """The 1-D view of a C-contiguous array (a view, so updates land in the array)."""
    return backend.namespace_of(a).reshape(a, (-1,))


def relu(x, flat_view, kernels=None):
    """``(max(x, 0), mask)`` laid out like ``x``, which fills its memory without gaps in some axis
    order; ``flat_view(a)`` is the 1-D view of such an array in memory order."""
    xp = backend.namespace_of(x)
    out, mask = xp.empty_like(x), xp.empty_like(x)
    launch(kernels or cuda_launch.default_kernels(), "activation", "xpnn_relu_forward", x.dtype, x.size,
           flat_view(x), flat_view(out), flat_view(mask), np.int64(x.size))
    return out, mask


def relu_backward(grad, mask, flat_view, kernels=None):
    """``grad * mask`` for a ``grad`` laid out like ``mask``."""
    out = backend.namespace_of(grad).empty_like(mask)
    launch(kernels or cuda_launch.default_kernels(), "activation", "xpnn_relu_backward", grad.dtype, grad.size,
           flat_view(grad), flat_view(mask), flat_view(out), np.int64(grad.size))
    return out


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, scale, shifted_eps, l2, decay, kernels=None):
    """The Adam step of ``xpnn.ops.updates`` in one launch over C-contiguous arrays of one dtype;
    the scalars are rounded to that dtype first, as the portable version's array arithmetic does."""
    t = np.dtype(backend.dtype_name(param.dtype)).type
    flat = [_flat(a) for a in (param, grad, exp_avg, exp_avg_sq)]
    amsgrad = max_exp_avg_sq is not None
    vmax = _flat(max_exp_avg_sq if amsgrad else exp_avg_sq)
    launch(kernels or cuda_launch.default_kernels(), "updates", "xpnn_adam", param.dtype, param.size, *flat, vmax, np.int64(param.size),
           t(1 - beta1), t(beta2), t(1 - beta2), t(scale), t(shifted_eps), t(l2), t(decay), np.int32(amsgrad))


def sgd_update(param, grad, momentum_buffer, lr, momentum, dampening, weight_decay, nesterov, first, kernels=None):
    """The SGD step of ``xpnn.ops.updates`` in one launch over C-contiguous arrays of one dtype
    (``momentum_buffer`` None when momentum is 0)."""
    t = np.dtype(backend.dtype_name(param.dtype)).type
    flat = [_flat(a) for a in (param, grad, param if momentum_buffer is None else momentum_buffer)]
    launch(kernels or cuda_launch.default_kernels(), "updates", "xpnn_sgd", param.dtype, param.size, *flat, np.int64(param.size),
           t(lr), t(momentum), t(1 - dampening), t(weight_decay), np.int32(bool(nesterov)), np.int32(bool(first)))

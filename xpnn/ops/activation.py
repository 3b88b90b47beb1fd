"""ReLU forward and backward: one door, :func:`relu`, returning the output and its backward.

Paths: on NumPy one compiled pass makes the output and a uint8 0/1 mask, and one applies it
backward (for arrays of at least ``NUMBA_MIN_ELEMENTS``) (``xpnn.kernels.numba_elementwise``), on CUDA one kernel launch each way
(``xpnn.kernels.cuda_elementwise``); both walk the input in its own memory order (Conv2d's
batch-last output included) and need an input without gaps. Otherwise, and for float16, the
portable ``maximum`` and a 0/1 multiply (not ``where``, many times slower on NumPy)."""

from .. import backend

# On NumPy, arrays of fewer elements take the portable path: the compiled passes cost some 15
# microseconds a call before the first element; NumPy's ufuncs are faster below about 49,152
# elements, level there, and slower from 65,536 (bench/compiled_threshold.py).
NUMBA_MIN_ELEMENTS = 1 << 16


def relu(x):
    """``(max(x, 0), backward)``: the output laid out like ``x`` (NaN stays NaN, as in PyTorch)
    and ``backward(grad)``, which passes the gradient where the input was positive."""
    path = backend.fast_path(backend.namespace_of(x))
    compiled = path != "portable" and backend.kernel_dtype(x) and x.size and (path != "numba" or x.size >= NUMBA_MIN_ELEMENTS)
    if compiled and backend.flat_in_memory_order(x) is not None:
        return relu_numba(x) if path == "numba" else relu_cuda(x)
    return relu_portable(x)


def relu_portable(x):
    """ReLU in Array API calls: ``maximum`` and a 0/1 mask."""
    xp = backend.namespace_of(x)
    y = xp.maximum(x, 0.0)
    mask = xp.astype(y > 0, y.dtype)

    def backward(grad):
        return grad * mask

    return y, backward


def relu_numba(x):
    """ReLU on NumPy: the output and a uint8 mask in one compiled pass; backward multiplies by
    the mask in one compiled pass too (NumPy's multiply for a gradient laid out otherwise)."""
    from ..kernels import numba_elementwise

    y, mask = numba_elementwise.relu(x)
    return y, relu_mask_backward(mask, x.dtype)


def relu_mask_backward(mask, dtype):
    """ReLU's backward on NumPy for a uint8 ``mask`` of the kept values (from the compiled ReLU,
    or from a layer that applied the ReLU in its own last pass) and the forward's ``dtype``: one
    compiled pass when the gradient is laid out like the mask, NumPy's multiply otherwise."""
    from ..kernels import numba_elementwise

    def backward(grad):
        if grad.dtype != dtype:  # promoted as the portable multiply by a mask in x's dtype promotes
            return grad * mask.astype(dtype)
        return numba_elementwise.relu_backward(grad, mask)

    return backward


def rectify_portable(y):
    """``(max(y, 0), uint8 mask of y > 0)`` in Array API calls: a following ReLU applied by a
    layer whose compiled pass could not (the fusion's portable twin)."""
    xp = backend.namespace_of(y)
    return xp.maximum(y, 0.0), xp.astype(y > 0, xp.uint8)


def relu_cuda(x, kernels=None):
    """ReLU on CUDA: one launch forward, one backward (when the gradient is laid out like the
    input, as from the layers that follow; a multiply otherwise)."""
    from ..kernels import cuda_elementwise

    y, mask = cuda_elementwise.relu(x, backend.flat_in_memory_order, kernels)

    def backward(grad):
        if grad.strides != mask.strides or grad.dtype != mask.dtype:
            return grad * mask
        return cuda_elementwise.relu_backward(grad, mask, backend.flat_in_memory_order, kernels)

    return y, backward

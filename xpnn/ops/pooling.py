"""Max pooling forward and backward: one door, :func:`max_pool2d`, that returns the maxima and
the function that routes their gradient back.

Paths: on CUDA one kernel each way for any geometry (``xpnn.kernels.cuda_windows``); for windows
that tile the input (stride == kernel, no padding or dilation, sizes the kernel divides: the
common 2x2 pool), on NumPy a compiled pass when the input's memory runs are long
(``xpnn.kernels.numba_windows``), else reductions over views of the input's own memory; for
any other geometry a loop over the kernel offsets. Every path gives each window's first maximum
(row-major) the gradient, or its last NaN (PyTorch's rule). Selection is arithmetic (compare,
maximum, multiply by a 0/1 mask), never ``where``: NumPy's ``where`` on an unpredictable mask is
many times slower than a multiply."""

import math

from .. import backend
from .windows import pad2d, scatter_windows, window_slices

# On NumPy, tiles whose memory runs (the axes after W: the batch, after Conv2d) are at least this
# long go through the compiled loop; shorter runs (NCHW's single elements) stay with the NumPy
# reductions, which are faster there (bench/NOTES.md).
COMPILED_MIN_RUN = 16

# Memory orders read in place, as NCHW axis permutations: H directly before W.
MEMORY_ORDERS = ((0, 1, 2, 3), (1, 0, 2, 3), (1, 2, 3, 0), (0, 2, 3, 1))  # NCHW, CNHW, CHWN, NHWC


def max_pool2d(x, kernel, stride, padding, dilation, output_size):
    """``(y, backward)``: the (N, C, OH, OW) window maxima of NCHW ``x`` (geometry as (h, w)
    pairs, already validated), laid out in ``x``'s memory order where it has one of
    ``MEMORY_ORDERS``, and ``backward(grad)``, the input gradient of an output gradient."""
    xp = backend.namespace_of(x)
    path = backend.fast_path(xp) if backend.kernel_dtype(x) else "portable"
    tiled = stride == kernel and padding == (0, 0) and dilation == (1, 1) and all(
        size % k == 0 for size, k in zip(x.shape[2:], kernel)
    )
    if path == "cuda":
        return max_pool2d_cuda(x, kernel, stride, padding, dilation, output_size)
    if tiled:
        order = memory_order(x)
        h, w, inner = _around_rows(tuple(x.shape[a] for a in order), order)
        if path == "numba" and inner >= COMPILED_MIN_RUN:
            return max_pool2d_tiles_numba(x, kernel, order)
        return max_pool2d_tiles_portable(x, kernel, order)
    return max_pool2d_portable(x, kernel, stride, padding, dilation, output_size)


def max_pool2d_cuda(x, kernel, stride, padding, dilation, output_size, kernels=None):
    """The CUDA path: one launch forward and one backward, output in ``x``'s memory order."""
    from ..kernels import cuda_windows

    order = memory_order(x)
    x_shape = tuple(x.shape)
    best, which = cuda_windows.max_pool(x, kernel, stride, padding, dilation, output_size, order, kernels)

    def backward(grad):
        grad = _like(grad, which)
        return cuda_windows.max_pool_backward(grad, which, x_shape, kernel, stride, padding, dilation, order, kernels)

    return best, backward


def max_pool2d_portable(x, kernel, stride, padding, dilation, output_size):
    """Any geometry, in Array API calls: the maximum over the KH*KW strided views of the padded
    input, and the gradient added back through the same views."""
    xp = backend.namespace_of(x)
    x_shape = tuple(x.shape)
    slices = window_slices(kernel, stride, dilation, output_size)
    image = pad2d(x, padding, -math.inf)
    best, arg = first_max(xp, [image[:, :, rows, cols] for _, _, (rows, cols) in slices])

    def backward(grad):
        return scatter_windows(route(xp, grad, arg, len(slices)), x_shape, padding, slices)

    return best, backward


def max_pool2d_tiles_numba(x, kernel, order):
    """Tiling windows on NumPy, in one compiled pass each way over the input's memory."""
    from ..kernels import numba_windows

    xp = backend.namespace_of(x)
    kh, kw = kernel
    memory = xp.permute_dims(x, order)
    h, w, inner = _around_rows(memory.shape, order)
    best, tile_arg = numba_windows.max_pool_tiles(xp.reshape(memory, (-1, h, w, inner)), kernel)
    memory_shape = tuple(memory.shape)

    def backward(grad):
        grad_memory = xp.reshape(xp.permute_dims(grad, order), (-1, h // kh, w // kw, inner))
        return _from_memory(xp, numba_windows.max_pool_tiles_backward(grad_memory, tile_arg, kernel), memory_shape, order, h, w)

    return _from_memory(xp, best, memory_shape, order, h // kh, w // kw), backward


def max_pool2d_tiles_portable(x, kernel, order):
    """Tiling windows in Array API calls: reduce along W, then along H, over views of the input's
    memory, so every pass reads long runs instead of one short run per image row."""
    xp = backend.namespace_of(x)
    kh, kw = kernel
    memory = xp.permute_dims(x, order)
    memory_shape = tuple(memory.shape)
    h, w, inner = _around_rows(memory_shape, order)
    rows = xp.reshape(memory, (-1, kw, inner))  # one line per kw-wide run of a tile row
    row_max, col_arg = first_max(xp, [rows[:, j, :] for j in range(kw)])
    tiles = xp.reshape(row_max, (-1, kh, (w // kw) * inner))  # one line per output row
    best, row_arg = first_max(xp, [tiles[:, i, :] for i in range(kh)])

    def backward(grad):
        out_rows = xp.reshape(xp.permute_dims(grad, order), (-1, (w // kw) * inner))
        tile_grad = xp.stack(route(xp, out_rows, row_arg, kh), axis=1)
        row_grad = xp.stack(route(xp, xp.reshape(tile_grad, (-1, inner)), col_arg, kw), axis=1)
        return _from_memory(xp, row_grad, memory_shape, order, h, w)

    return _from_memory(xp, best, memory_shape, order, h // kh, w // kw), backward


def memory_order(x):
    """The axis order in which NCHW ``x`` is C-contiguous (batch-last when it comes from Conv2d),
    among ``MEMORY_ORDERS``; NCHW when there is none (a reshape then copies)."""
    xp = backend.namespace_of(x)
    for order in MEMORY_ORDERS:
        if backend.is_c_contiguous(xp.permute_dims(x, order)):
            return order
    return MEMORY_ORDERS[0]


def _like(a, template):
    """``a`` with ``template``'s strides (itself when it has them, else a copy in that layout)."""
    if a.strides == template.strides:
        return a
    xp = backend.namespace_of(a)
    order = memory_order(template)
    inverse = tuple(order.index(axis) for axis in range(4))
    return xp.permute_dims(backend.c_contiguous(xp.permute_dims(a, order)), inverse)


def _around_rows(memory_shape, order):
    """(H, W, inner) of a memory-ordered shape: inner is the product of the axes after W."""
    at = order.index(2)
    return memory_shape[at], memory_shape[at + 1], math.prod(memory_shape[at + 2:])


def _from_memory(xp, values, memory_shape, order, h, w):
    """NCHW view of ``values`` laid out in the memory ``order``, with H and W set to h, w."""
    shape = list(memory_shape)
    shape[order.index(2)], shape[order.index(3)] = h, w
    inverse = tuple(order.index(axis) for axis in range(4))
    return xp.permute_dims(xp.reshape(values, tuple(shape)), inverse)


def first_max(xp, values):
    """Elementwise maximum of same-shaped ``values`` and the index of the first one that attains
    it, or of the last NaN where there are NaNs (PyTorch's rule), as a float mask-like array (None
    when there is one value)."""
    best, arg = values[0], None
    for k, value in enumerate(values[1:], start=1):
        larger = xp.astype((value > best) | (value != value), value.dtype)
        best = xp.maximum(best, value)
        if arg is None:
            arg = larger if k == 1 else larger * k
        else:
            arg = xp.maximum(arg, larger * k)
    return best, arg


def route(xp, grad, arg, count):
    """Split ``grad`` into ``count`` parts, part k keeping the entries whose ``arg`` is k."""
    if arg is None:
        return [grad]
    if count == 2:
        second = grad * arg
        return [grad - second, second]
    return [grad * xp.astype(arg == k, grad.dtype) for k in range(count)]

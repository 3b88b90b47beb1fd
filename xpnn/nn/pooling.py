"""Pooling over NCHW images: MaxPool2d, AvgPool2d and AdaptiveAvgPool2d.

MaxPool2d and AvgPool2d use the window machinery of im2col (``functional.window_slices``): a loop
over the KH*KW kernel offsets, each an (N, C, OH, OW) strided view of the padded input, so no
loop runs over output pixels and no (N*OH*OW, KH*KW) buffer is built.
"""

import math
import numbers

import numpy as np

from .. import backend, functional as F
from ..errors import ShapeError
from .module import Module


class _Pool2d(Module):
    """Shared geometry, validation and the padded-gradient scatter of the window pools."""

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = F.as_pair(kernel_size, "kernel_size", 1, name)
        self.stride = self.kernel_size if stride is None else F.as_pair(stride, "stride", 1, name)
        self.padding = F.as_pair(padding, "padding", 0, name)
        self.dilation = F.as_pair(dilation, "dilation", 1, name)
        self._kernel_size_arg = kernel_size
        self._stride_arg = kernel_size if stride is None else stride
        self._padding_arg = padding
        self._dilation_arg = dilation
        span = tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))
        if any(2 * p > s for p, s in zip(self.padding, span)):
            raise ValueError(f"{name}: expected padding at most half the kernel size {span}, got padding={padding}")

    def _where(self):
        return f"{type(self).__name__}(kernel_size={self._kernel_size_arg}, stride={self._stride_arg})"

    def _windows(self, x):
        """Validate ``x``, cache its shape and the per-offset window slices; return its namespace."""
        xp = backend.namespace_of(x)
        out = F.window_geometry(tuple(x.shape), self.kernel_size, self.stride, self.padding, self.dilation, self._where())[-1]
        self._x_shape = tuple(x.shape)
        self._slices = F.window_slices(self.kernel_size, self.stride, self.dilation, out)
        return xp

    def _scatter(self, xp, parts, dtype):
        """Add the per-offset (N, C, OH, OW) gradients ``parts`` back into the (padded) input."""
        n, c, h, w = self._x_shape
        ph, pw = self.padding
        grad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=dtype)
        for (_, _, (rows, cols)), part in zip(self._slices, parts):
            grad[:, :, rows, cols] += part
        return grad[:, :, ph:ph + h, pw:pw + w]


class MaxPool2d(_Pool2d):
    """Maximum over each window; ``stride`` defaults to ``kernel_size``; padding is -inf. The
    gradient goes to the first maximum of each window (row-major), as in PyTorch; a NaN in a
    window makes its output NaN and takes the gradient (the last NaN, as in PyTorch).

    Non-overlapping windows that tile the input (stride == kernel, no padding or dilation, H and
    W multiples of the kernel: the common 2x2 pool) are reduced along W, then along H, over views
    of the input's own memory (batch-last after Conv2d), so every pass is a long run instead of
    one short run per image row; on NumPy, when those runs are long, a compiled loop does both
    reductions in one pass (``xpnn.kernels.cpu_windows``). Selection is arithmetic (compare,
    maximum, multiply by a 0/1 mask), never ``where``: NumPy's ``where`` on an unpredictable mask
    is about 15x slower than a multiply."""

    def forward(self, x):
        xp = self._windows(x)
        self._tiled = self.stride == self.kernel_size and self.padding == (0, 0) and self.dilation == (1, 1) and all(
            size % k == 0 for size, k in zip(self._x_shape[2:], self.kernel_size)
        )
        if self._tiled:
            return self._forward_tiled(xp, x)
        image = F.pad2d(x, self.padding, -math.inf)
        best, self._arg = _first_max(xp, [image[:, :, rows, cols] for _, _, (rows, cols) in self._slices])
        return best

    def backward(self, grad):
        xp = backend.namespace_of(grad)
        if self._tiled:
            return self._backward_tiled(xp, grad)
        return self._scatter(xp, _route(xp, grad, self._arg, len(self._slices)), grad.dtype)

    def _forward_tiled(self, xp, x):
        kh, kw = self.kernel_size
        self._order = _memory_order(x)
        memory = xp.permute_dims(x, self._order)
        h, w, inner = _around_rows(memory.shape, self._order)
        self._compiled = backend.is_numpy(xp) and inner >= _COMPILED_MIN_RUN
        if self._compiled:
            from ..kernels import cpu_windows

            best, self._tile_arg = cpu_windows.max_pool_tiles(xp.reshape(memory, (-1, h, w, inner)), (kh, kw))
            return self._from_memory(xp, best, memory.shape, h // kh, w // kw)
        rows = xp.reshape(memory, (-1, kw, inner))  # one line per kw-wide run of a tile row
        row_max, self._col_arg = _first_max(xp, [rows[:, j, :] for j in range(kw)])
        tiles = xp.reshape(row_max, (-1, kh, (w // kw) * inner))  # one line per output row
        best, self._row_arg = _first_max(xp, [tiles[:, i, :] for i in range(kh)])
        return self._from_memory(xp, best, memory.shape, h // kh, w // kw)

    def _backward_tiled(self, xp, grad):
        kh, kw = self.kernel_size
        memory_shape = tuple(self._x_shape[a] for a in self._order)
        h, w, inner = _around_rows(memory_shape, self._order)
        if self._compiled:
            from ..kernels import cpu_windows

            grad_memory = xp.reshape(xp.permute_dims(grad, self._order), (-1, h // kh, w // kw, inner))
            return self._from_memory(xp, cpu_windows.max_pool_tiles_backward(grad_memory, self._tile_arg, (kh, kw)), memory_shape, h, w)
        out_rows = xp.reshape(xp.permute_dims(grad, self._order), (-1, (w // kw) * inner))
        tiles = xp.stack(_route(xp, out_rows, self._row_arg, kh), axis=1)
        rows = xp.stack(_route(xp, xp.reshape(tiles, (-1, inner)), self._col_arg, kw), axis=1)
        return self._from_memory(xp, rows, memory_shape, h, w)

    def _from_memory(self, xp, values, memory_shape, h, w):
        """NCHW view of ``values`` laid out in the input's memory order, with H and W set to h, w."""
        shape = list(memory_shape)
        shape[self._order.index(2)], shape[self._order.index(3)] = h, w
        inverse = tuple(self._order.index(axis) for axis in range(4))
        return xp.permute_dims(xp.reshape(values, tuple(shape)), inverse)

    def extra_repr(self):
        return f"kernel_size={self._kernel_size_arg}, stride={self._stride_arg}, padding={self._padding_arg}, dilation={self._dilation_arg}"


# On NumPy, tiles whose memory runs (the axes after W: the batch, after Conv2d) are at least this
# long go through the compiled loop (one pass, 5x faster than the reshaped NumPy path on LeNet);
# shorter runs, NCHW's single elements, stay with NumPy, 4x faster there than the loop.
_COMPILED_MIN_RUN = 16

# Memory orders the tiled max pool reads in place, as NCHW axis permutations: H directly before W.
_MEMORY_ORDERS = ((0, 1, 2, 3), (1, 0, 2, 3), (1, 2, 3, 0), (0, 2, 3, 1))  # NCHW, CNHW, CHWN, NHWC


def _memory_order(x):
    """The axis order in which NCHW ``x`` is C-contiguous (batch-last when it comes from Conv2d),
    among those with H right before W; NCHW when there is none (a reshape then copies)."""
    xp = backend.namespace_of(x)
    for order in _MEMORY_ORDERS:
        if backend.is_c_contiguous(xp.permute_dims(x, order)):
            return order
    return _MEMORY_ORDERS[0]


def _around_rows(memory_shape, order):
    """(H, W, inner) of a memory-ordered shape: inner is the product of the axes after W."""
    at = order.index(2)
    return memory_shape[at], memory_shape[at + 1], math.prod(memory_shape[at + 2:])


def _first_max(xp, values):
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


def _route(xp, grad, arg, count):
    """Split ``grad`` into ``count`` parts, part k keeping the entries whose ``arg`` is k."""
    if arg is None:
        return [grad]
    if count == 2:
        second = grad * arg
        return [grad - second, second]
    return [grad * xp.astype(arg == k, grad.dtype) for k in range(count)]


class AvgPool2d(_Pool2d):
    """Mean over each window; ``stride`` defaults to ``kernel_size``; zero padding counted in the
    divisor (``count_include_pad=True``, PyTorch's default) unless ``count_include_pad=False``."""

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)
        self._divisors = {}

    def _scale(self, xp, dtype):
        """1/divisor: a Python float, or an (OH, OW) array when padding is not counted."""
        kh, kw = self.kernel_size
        if self.count_include_pad or self.padding == (0, 0):
            return 1.0 / (kh * kw)
        h, w = self._x_shape[2:]
        key = (xp.__name__, backend.dtype_name(dtype), h, w)
        if key not in self._divisors:
            ones = F.pad2d(np.ones((h, w)), self.padding, 0.0)
            counts = sum(ones[rows, cols] for _, _, (rows, cols) in self._slices)
            self._divisors[key] = backend.asarray(1.0 / counts, xp, dtype)
        return self._divisors[key]

    def forward(self, x):
        xp = self._windows(x)
        image = F.pad2d(x, self.padding, 0.0)
        total = None
        for _, _, (rows, cols) in self._slices:
            value = image[:, :, rows, cols]
            total = value if total is None else total + value
        return total * self._scale(xp, x.dtype)

    def backward(self, grad):
        xp = backend.namespace_of(grad)
        share = grad * self._scale(xp, grad.dtype)
        return self._scatter(xp, (share for _ in self._slices), grad.dtype)

    def extra_repr(self):
        s = f"kernel_size={self._kernel_size_arg}, stride={self._stride_arg}, padding={self._padding_arg}"
        return s if self.count_include_pad else s + ", count_include_pad=False"


def _adaptive_matrix(in_size, out_size):
    """Host (out_size, in_size) averaging matrix with PyTorch's windows: output i averages input
    rows floor(i*in/out) .. ceil((i+1)*in/out) - 1."""
    matrix = np.zeros((out_size, in_size))
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -(-((i + 1) * in_size) // out_size)
        matrix[i, start:end] = 1.0 / (end - start)
    return matrix


class AdaptiveAvgPool2d(Module):
    """Average pooling to a fixed ``output_size`` (an int, or an (h, w) pair whose entries may be
    None for "same as the input"), whatever the input size. ``AdaptiveAvgPool2d(1)`` is global
    average pooling: (N, C, H, W) -> (N, C, 1, 1). General sizes use PyTorch's windows, applied
    as two small averaging matrices: ``out = A_h @ x @ A_w^T``."""

    def __init__(self, output_size):
        super().__init__()
        items = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
        if len(items) != 2 or not all(v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1) for v in items):
            raise ValueError(f"AdaptiveAvgPool2d: expected output_size to be a positive int, None or a pair of them, got {output_size!r}")
        self.output_size = output_size
        self._size = tuple(None if v is None else int(v) for v in items)
        self._matrices = {}

    def _target(self, x):
        if x.ndim != 4:
            raise ShapeError(f"AdaptiveAvgPool2d(output_size={self.output_size}): expected a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        h, w = x.shape[2:]
        return (h if self._size[0] is None else self._size[0], w if self._size[1] is None else self._size[1])

    def _averaging(self, xp, dtype, h, w, oh, ow):
        key = (xp.__name__, backend.dtype_name(dtype), h, w, oh, ow)
        if key not in self._matrices:
            self._matrices[key] = (backend.asarray(_adaptive_matrix(h, oh), xp, dtype), backend.asarray(_adaptive_matrix(w, ow), xp, dtype))
        return self._matrices[key]

    def forward(self, x):
        xp = backend.namespace_of(x)
        oh, ow = self._target(x)
        self._x_shape = tuple(x.shape)
        h, w = self._x_shape[2:]
        if (oh, ow) == (1, 1):
            return xp.mean(x, axis=(2, 3), keepdims=True)
        a_h, a_w = self._averaging(xp, x.dtype, h, w, oh, ow)
        return a_h @ x @ a_w.T

    def backward(self, grad):
        xp = backend.namespace_of(grad)
        h, w = self._x_shape[2:]
        oh, ow = grad.shape[2:]
        if (oh, ow) == (1, 1):
            return xp.asarray(xp.broadcast_to(grad * (1.0 / (h * w)), self._x_shape), copy=True)
        a_h, a_w = self._averaging(xp, grad.dtype, h, w, oh, ow)
        return a_h.T @ grad @ a_w

    def extra_repr(self):
        return f"output_size={self.output_size}"

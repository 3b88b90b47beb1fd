"""Pooling over NCHW images: MaxPool2d, AvgPool2d and AdaptiveAvgPool2d; MaxPool1d and AvgPool1d
over (N, C, L) sequences, as the 2-D pools over a 1-high image.

AvgPool2d and the general max pool use the window machinery of im2col (``ops.windows``): a loop
over the KH*KW kernel offsets, each an (N, C, OH, OW) strided view of the padded input, so no
loop runs over output pixels and no (N*OH*OW, KH*KW) buffer is built.
"""

import numbers

import numpy as np

from .. import backend, ops
from ..errors import ConfigError, ShapeError
from ..ops import windows
from .conv import as_single
from .module import Module


class _Pool2d(Module):
    """Shared geometry, validation and the padded-gradient scatter of the window pools."""

    _cache = ("_x_shape", "_slices")  # what only backward needs: dropped by a forward under nn.no_grad()

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        super().__init__()
        name = type(self).__name__
        self.kernel_size = windows.as_pair(kernel_size, "kernel_size", 1, name)
        self.stride = self.kernel_size if stride is None else windows.as_pair(stride, "stride", 1, name)
        self.padding = windows.as_pair(padding, "padding", 0, name)
        self.dilation = windows.as_pair(dilation, "dilation", 1, name)
        self._kernel_size_arg = kernel_size
        self._stride_arg = kernel_size if stride is None else stride
        self._padding_arg = padding
        self._dilation_arg = dilation
        span = tuple(d * (k - 1) + 1 for k, d in zip(self.kernel_size, self.dilation))
        if any(2 * p > s for p, s in zip(self.padding, span)):
            raise ConfigError(f"{name}: expected padding at most half the kernel size {span}, got padding={padding}")

    def _where(self):
        return f"{type(self).__name__}(kernel_size={self._kernel_size_arg}, stride={self._stride_arg})"

    def _windows(self, x):
        """Validate ``x``, cache its shape and the per-offset window slices; return its namespace."""
        xp = backend.namespace_of(x)
        out = windows.window_geometry(tuple(x.shape), self.kernel_size, self.stride, self.padding, self.dilation, self._where())[-1]
        self._x_shape = tuple(x.shape)
        self._slices = windows.window_slices(self.kernel_size, self.stride, self.dilation, out)
        return xp



class MaxPool2d(_Pool2d):
    """Applies 2-D max pooling over a batch of images.

    Each output is the maximum of its window; padding counts as -inf. The gradient goes to the
    first maximum of each window (row-major), as in PyTorch; a NaN in a window makes its output
    NaN and takes the gradient (the last NaN, as in PyTorch). The output keeps the input's memory
    order (a convolution's batch-last layout included); ``xpnn.ops.max_pool2d`` chooses the path.

    Args:
        kernel_size: the window size, an int or an (h, w) pair.
        stride: the window step, an int or an (h, w) pair. Default: ``kernel_size``.
        padding: -inf padding on both sides, at most half the (dilated) kernel. Default 0.
        dilation: spacing between window elements. Default 1.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, OH, OW)``,
          ``OH = (H + 2*padding[0] - dilation[0]*(kernel_size[0]-1) - 1) // stride[0] + 1``,
          and likewise OW.
    """

    _cache = ("_backward",)

    def forward(self, x):
        geometry = windows.window_geometry(tuple(x.shape), self.kernel_size, self.stride, self.padding, self.dilation, self._where())
        y, self._backward = ops.max_pool2d(x, *geometry)
        return y

    def backward(self, grad):
        return self._backward(grad)

    def extra_repr(self):
        return f"kernel_size={self._kernel_size_arg}, stride={self._stride_arg}, padding={self._padding_arg}, dilation={self._dilation_arg}"


class AvgPool2d(_Pool2d):
    """Applies 2-D average pooling over a batch of images.

    Each output is the mean of its window, summed over the KH*KW strided views of the zero-padded
    input (see the module docstring); backward adds each output's share of the gradient back
    through the same views.

    Args:
        kernel_size: the window size, an int or an (h, w) pair.
        stride: the window step, an int or an (h, w) pair. Default: ``kernel_size``.
        padding: zero padding on both sides, at most half the kernel. Default 0.
        count_include_pad: count the padding zeros in each window's divisor (PyTorch's
            default); when False, divide by the number of input pixels in the window. Default True.

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, OH, OW)``,
          ``OH = (H + 2*padding[0] - kernel_size[0]) // stride[0] + 1``, and likewise OW.
    """

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)
        self._divisors = {}

    def _scale(self, xp, dtype, device):
        """1/divisor: a Python float, or an (OH, OW) array when padding is not counted."""
        kh, kw = self.kernel_size
        if self.count_include_pad or self.padding == (0, 0):
            return 1.0 / (kh * kw)
        h, w = self._x_shape[2:]
        key = (xp.__name__, str(device), backend.dtype_name(dtype), h, w)
        if key not in self._divisors:
            ones = windows.pad2d(np.ones((h, w)), self.padding, 0.0)
            counts = sum(ones[rows, cols] for _, _, (rows, cols) in self._slices)
            self._divisors[key] = backend.asarray(1.0 / counts, xp, dtype, device)
        return self._divisors[key]

    def forward(self, x):
        xp = self._windows(x)
        image = windows.pad2d(x, self.padding, 0.0)
        total = None
        for _, _, (rows, cols) in self._slices:
            value = image[:, :, rows, cols]
            total = value if total is None else total + value
        return total * self._scale(xp, x.dtype, backend.device_of(x))

    def backward(self, grad):
        xp = backend.namespace_of(grad)
        share = grad * self._scale(xp, grad.dtype, backend.device_of(grad))
        return windows.scatter_windows([share] * len(self._slices), self._x_shape, self.padding, self._slices)

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
    """Applies 2-D average pooling to a fixed output size, whatever the input size.

    Output row i averages input rows ``floor(i*H/OH)`` to ``ceil((i+1)*H/OH) - 1`` (PyTorch's
    windows), and likewise columns, applied as two small averaging matrices:
    ``out = A_h @ x @ A_w^T``, and backward ``A_h^T @ grad @ A_w``. ``AdaptiveAvgPool2d(1)`` is
    global average pooling, a plain mean over H and W.

    Args:
        output_size: (OH, OW): an int for both, or a pair whose entries may be None for "the
            input's size".

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: ``(N, C, OH, OW)``.
    """

    _cache = ("_x_shape",)

    def __init__(self, output_size):
        super().__init__()
        items = output_size if isinstance(output_size, (tuple, list)) else (output_size, output_size)
        if len(items) != 2 or not all(v is None or (isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1) for v in items):
            raise ConfigError(f"AdaptiveAvgPool2d: expected output_size to be a positive int, None or a pair of them, got {output_size!r}")
        self.output_size = output_size
        self._size = tuple(None if v is None else int(v) for v in items)
        self._matrices = {}

    def _target(self, x):
        if x.ndim != 4:
            raise ShapeError(f"AdaptiveAvgPool2d(output_size={self.output_size}): expected a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        h, w = x.shape[2:]
        return (h if self._size[0] is None else self._size[0], w if self._size[1] is None else self._size[1])

    def _averaging(self, xp, dtype, device, h, w, oh, ow):
        key = (xp.__name__, str(device), backend.dtype_name(dtype), h, w, oh, ow)
        if key not in self._matrices:
            self._matrices[key] = tuple(backend.asarray(_adaptive_matrix(i, o), xp, dtype, device) for i, o in ((h, oh), (w, ow)))
        return self._matrices[key]

    def forward(self, x):
        xp = backend.namespace_of(x)
        oh, ow = self._target(x)
        self._x_shape = tuple(x.shape)
        h, w = self._x_shape[2:]
        if (oh, ow) == (1, 1):
            return xp.mean(x, axis=(2, 3), keepdims=True)
        a_h, a_w = self._averaging(xp, x.dtype, backend.device_of(x), h, w, oh, ow)
        return a_h @ x @ a_w.T

    def backward(self, grad):
        xp = backend.namespace_of(grad)
        h, w = self._x_shape[2:]
        oh, ow = grad.shape[2:]
        if (oh, ow) == (1, 1):
            return xp.asarray(xp.broadcast_to(grad * (1.0 / (h * w)), self._x_shape), copy=True)
        a_h, a_w = self._averaging(xp, grad.dtype, backend.device_of(grad), h, w, oh, ow)
        return a_h.T @ grad @ a_w

    def extra_repr(self):
        return f"output_size={self.output_size}"


def _one_high(name, kernel_size, stride, padding, dilation=1):
    """A 1-D pool's arguments, checked, as the (1, k) geometry of the 2-D pool it runs as."""
    (k,) = as_single(kernel_size, "kernel_size", 1, name)
    (s,) = (k,) if stride is None else as_single(stride, "stride", 1, name)
    (p,) = as_single(padding, "padding", 0, name)
    (d,) = as_single(dilation, "dilation", 1, name)
    if 2 * p > d * (k - 1) + 1:
        raise ConfigError(f"{name}: expected padding at most half the kernel size {d * (k - 1) + 1}, got padding={padding!r}")
    return (1, k), (1, s), (0, p), (1, d)


def _check_sequence(pool, x):
    """Raise unless ``x`` is an (N, C, L) batch the pool's window fits; return its (N, C, 1, L) view."""
    where = pool._where()
    if getattr(x, "ndim", None) != 3:
        raise ShapeError(f"{where}: expected a 3-D (N, C, L) input, got shape {tuple(getattr(x, 'shape', ()))}")
    span, p = pool.dilation[1] * (pool.kernel_size[1] - 1) + 1, pool.padding[1]
    if x.shape[2] + 2 * p < span:
        raise ShapeError(f"{where}: kernel of size {span} (dilated) is larger than the padded input {x.shape[2] + 2 * p} (input shape {tuple(x.shape)}, padding {p})")
    return backend.namespace_of(x).expand_dims(x, axis=2)


class MaxPool1d(MaxPool2d):
    """Applies 1-D max pooling over a batch of sequences.

    Runs as :class:`MaxPool2d` over the (N, C, 1, L) view of the input, through the same code
    (``ops.max_pool2d``): padding counts as -inf, the gradient goes to the first maximum of each
    window, a NaN takes it, and the output keeps the input's memory order.

    Args:
        kernel_size: the window size, an int.
        stride: the window step, an int. Default: ``kernel_size``.
        padding: -inf padding on both ends, at most half the (dilated) kernel. Default 0.
        dilation: spacing between window elements. Default 1.

    Shape:
        - Input: ``(N, C, L)``.
        - Output: ``(N, C, L_out)``, ``L_out = (L + 2*padding - dilation*(kernel_size-1) - 1) // stride + 1``.

    The attributes ``kernel_size``, ``stride``, ``padding`` and ``dilation`` hold the (1, k)
    pairs of the 2-D pool it runs as.
    """

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1):
        super().__init__(*_one_high("MaxPool1d", kernel_size, stride, padding, dilation))
        self._kernel_size_arg, self._stride_arg = kernel_size, kernel_size if stride is None else stride
        self._padding_arg, self._dilation_arg = padding, dilation

    def forward(self, x):
        return super().forward(_check_sequence(self, x))[:, :, 0, :]

    def backward(self, grad):
        return super().backward(backend.namespace_of(grad).expand_dims(grad, axis=2))[:, :, 0, :]


class AvgPool1d(AvgPool2d):
    """Applies 1-D average pooling over a batch of sequences.

    Runs as :class:`AvgPool2d` over the (N, C, 1, L) view of the input, through the same code.

    Args:
        kernel_size: the window size, an int.
        stride: the window step, an int. Default: ``kernel_size``.
        padding: zero padding on both ends, at most half the kernel. Default 0.
        count_include_pad: count the padding zeros in each window's divisor (PyTorch's
            default); when False, divide by the number of input elements in the window. Default True.

    Shape:
        - Input: ``(N, C, L)``.
        - Output: ``(N, C, L_out)``, ``L_out = (L + 2*padding - kernel_size) // stride + 1``.

    The attributes ``kernel_size``, ``stride`` and ``padding`` hold the (1, k) pairs of the 2-D
    pool it runs as.
    """

    def __init__(self, kernel_size, stride=None, padding=0, count_include_pad=True):
        kernel, stride_pair, padding_pair, _ = _one_high("AvgPool1d", kernel_size, stride, padding)
        super().__init__(kernel, stride_pair, padding_pair, count_include_pad)
        self._kernel_size_arg, self._stride_arg = kernel_size, kernel_size if stride is None else stride
        self._padding_arg = padding

    def forward(self, x):
        return super().forward(_check_sequence(self, x))[:, :, 0, :]

    def backward(self, grad):
        return super().backward(backend.namespace_of(grad).expand_dims(grad, axis=2))[:, :, 0, :]

"""Upsample: resize NCHW images by nearest-neighbour or bilinear interpolation."""

import numbers

import numpy as np

from .. import backend
from ..errors import ConfigError, DTypeError, ShapeError
from .module import Module

MODES = ("nearest", "bilinear")


def _nearest_sources(size, out, scale):
    """PyTorch's nearest source index of each of ``out`` output positions along an axis of
    ``size`` (``scale``: the user's scale factor, or None to use the sizes), in float32 as
    PyTorch computes it."""
    dst = np.arange(out)
    if out == size:
        return dst
    if out == 2 * size:
        return dst >> 1
    ratio = np.float32(1.0 / scale) if scale is not None and scale > 0 else np.float32(size) / np.float32(out)
    return np.minimum(np.floor(dst.astype(np.float32) * ratio).astype(np.int64), size - 1)


def _bilinear_matrix(size, out, scale, align_corners):
    """The (out, size) matrix of PyTorch's bilinear weights along one axis: ``out = A @ in``."""
    dst = np.arange(out, dtype=np.float64)
    if align_corners:
        src = dst * ((size - 1) / (out - 1) if out > 1 else 0.0)
    else:
        ratio = 1.0 / scale if scale is not None and scale > 0 else size / out
        src = np.maximum((dst + 0.5) * ratio - 0.5, 0.0)
    low = np.minimum(np.floor(src).astype(np.int64), size - 1)
    high = np.minimum(low + 1, size - 1)
    frac = src - low
    matrix = np.zeros((out, size))
    np.add.at(matrix, (np.arange(out), low), 1.0 - frac)
    np.add.at(matrix, (np.arange(out), high), frac)
    return matrix


def _repeat(sources, size):
    """s when ``sources`` repeats each of ``size`` positions s times in order (else None)."""
    if len(sources) % size:
        return None
    s = len(sources) // size
    return s if np.array_equal(sources, np.arange(len(sources)) // s) else None


class Upsample(Module):
    """Upsamples (or resizes) a batch of images to ``size``, or by ``scale_factor``.

    "nearest" copies each output pixel from the input pixel PyTorch's ``nearest`` mode picks
    (``floor(dst * in / out)``, or ``floor(dst / scale_factor)`` when a scale factor is given);
    backward sums the gradient of each input pixel's copies (a reshape and a sum for integer
    factors, a 0/1 matrix product otherwise). "bilinear" weights the two nearest input pixels
    along each axis as PyTorch does (``align_corners`` as in PyTorch), applied as two small
    interpolation matrices, ``out = A_h @ x @ A_w^T``, and backward ``A_h^T @ grad @ A_w``; each
    output costs about ``H + W`` multiply-adds (two GEMMs), not the 4 of a direct blend.

    Args:
        size: the output size (OH, OW): an int for both or a pair of positive ints.
        scale_factor: the factor, a positive number or a pair of them; the output size is
            ``floor(H * scale_factor)``. Give exactly one of ``size`` and ``scale_factor``.
        mode: "nearest" (default) or "bilinear".
        align_corners: bilinear only: align the corner pixels' centres of input and output
            (True) or their edges (False, default).
        recompute_scale_factor: with ``scale_factor``, compute the interpolation from the output
            size (``in / out``) instead of the given factor, as in PyTorch. Default None (False).

    Shape:
        - Input: ``(N, C, H, W)``, floating.
        - Output: ``(N, C, OH, OW)``.
    """

    _cache = ("_x_shape", "_plan")  # what only backward needs: dropped by a forward under nn.no_grad()

    def __init__(self, size=None, scale_factor=None, mode="nearest", align_corners=None, recompute_scale_factor=None):
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"Upsample: expected mode to be one of {', '.join(MODES)}, got {mode!r}")
        if (size is None) == (scale_factor is None):
            raise ConfigError(f"Upsample: expected exactly one of size and scale_factor, got size={size!r}, scale_factor={scale_factor!r}")
        if align_corners is not None and mode == "nearest":
            raise ConfigError("Upsample: align_corners can only be set with mode='bilinear'")
        if size is not None:
            items = size if isinstance(size, (tuple, list)) else (size, size)
            if len(items) != 2 or not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 1 for v in items):
                raise ConfigError(f"Upsample: expected size to be a positive int or a pair of them, got {size!r}")
            self._size = (int(items[0]), int(items[1]))
            self._scale = None
        else:
            items = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor, scale_factor)
            if len(items) != 2 or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v) and v > 0 for v in items):
                raise ConfigError(f"Upsample: expected scale_factor to be a positive number or a pair of them, got {scale_factor!r}")
            self._size = None
            self._scale = (float(items[0]), float(items[1]))
        self.size = size
        self.scale_factor = scale_factor
        self.mode = mode
        self.align_corners = align_corners
        self.recompute_scale_factor = recompute_scale_factor
        self._matrices = {}
        self._x_shape = self._plan = None

    def _where(self):
        return f"Upsample({self.extra_repr()})"

    def _output_size(self, h, w):
        if self._size is not None:
            return self._size
        oh, ow = (int(np.floor(s * f)) for s, f in zip((h, w), self._scale))
        if oh < 1 or ow < 1:
            raise ShapeError(f"{self._where()}: an input of {h}x{w} pixels scales to {oh}x{ow}, expected at least 1x1")
        return oh, ow

    def _axis_plans(self, xp, dtype, device, h, w, oh, ow):
        """Per axis (rows, then columns): ("repeat", s), ("take", indices, 0/1 matrix) or
        ("matrix", A), cached by geometry."""
        key = (xp.__name__, str(device), backend.dtype_name(dtype), h, w, oh, ow)
        if key in self._matrices:
            return self._matrices[key]
        scales = (None, None) if self._scale is None or self.recompute_scale_factor else self._scale
        plans = []
        for size, out, scale in ((h, oh, scales[0]), (w, ow, scales[1])):
            if self.mode == "bilinear":
                plans.append(("matrix", backend.asarray(_bilinear_matrix(size, out, scale, bool(self.align_corners)), xp, dtype, device)))
                continue
            sources = _nearest_sources(size, out, scale)
            s = _repeat(sources, size)
            if s is not None:
                plans.append(("repeat", s))
            else:
                onehot = np.zeros((out, size))
                onehot[np.arange(out), sources] = 1.0
                plans.append(("take", backend.asarray(sources, xp, xp.int64, device), backend.asarray(onehot, xp, dtype, device)))
        self._matrices[key] = tuple(plans)
        return self._matrices[key]

    def forward(self, x):
        where = self._where()
        xp = backend.namespace_of(x)
        if not xp.isdtype(x.dtype, "real floating"):
            raise DTypeError(f"{where}: expected a floating input, got dtype {backend.dtype_name(x.dtype)}")
        if x.ndim != 4:
            raise ShapeError(f"{where}: expected a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        n, c, h, w = x.shape
        oh, ow = self._output_size(h, w)
        self._x_shape = tuple(x.shape)
        self._plan = self._axis_plans(xp, x.dtype, backend.device_of(x), h, w, oh, ow)
        rows, cols = self._plan
        if rows[0] == "repeat" and cols[0] == "repeat":  # one broadcast copy
            sh, sw = rows[1], cols[1]
            y = xp.broadcast_to(xp.reshape(x, (n, c, h, 1, w, 1)), (n, c, h, sh, w, sw))
            return xp.reshape(y, (n, c, oh, ow))
        y = _forward_axis(xp, x, rows, 2)
        return _forward_axis(xp, y, cols, 3)

    def backward(self, grad):
        xp = backend.namespace_of(grad)
        n, c, h, w = self._x_shape
        rows, cols = self._plan
        if cols[0] == "repeat":
            g = _sum_copies(xp.reshape(grad, (n, c, grad.shape[2], w, cols[1])), cols[1], 4)
        else:
            g = grad @ cols[-1]
        if rows[0] == "repeat":
            return _sum_copies(xp.reshape(g, (n, c, h, rows[1], w)), rows[1], 3)
        return xp.matrix_transpose(rows[-1]) @ g

    def extra_repr(self):
        text = f"size={self.size}" if self.size is not None else f"scale_factor={self.scale_factor}"
        text += f", mode={self.mode!r}"
        if self.align_corners is not None:
            text += f", align_corners={self.align_corners}"
        return text


def _sum_copies(g, s, axis):
    """The sum of ``g`` over its ``axis`` of length ``s`` (the copies of each input pixel), as
    ``s`` strided adds: NumPy reduces a short innermost axis many times slower."""
    index = [slice(None)] * g.ndim
    total = None
    for k in range(s):
        index[axis] = k
        part = g[tuple(index)]
        total = part if total is None else total + part
    return total if s > 1 else total * 1  # a new array, never a view of the gradient


def _forward_axis(xp, x, plan, axis):
    """``x`` resized along ``axis`` (2: rows, 3: columns) by one axis plan."""
    kind = plan[0]
    if kind == "repeat":
        s = plan[1]
        shape = tuple(x.shape)
        if axis == 2:
            y = xp.broadcast_to(xp.reshape(x, shape[:3] + (1, shape[3])), shape[:3] + (s, shape[3]))
            return xp.reshape(y, (shape[0], shape[1], shape[2] * s, shape[3]))
        y = xp.broadcast_to(xp.reshape(x, shape + (1,)), shape + (s,))
        return xp.reshape(y, shape[:3] + (shape[3] * s,))
    if kind == "take":
        return xp.take(x, plan[1], axis=axis)
    matrix = plan[1]
    return matrix @ x if axis == 2 else x @ xp.matrix_transpose(matrix)

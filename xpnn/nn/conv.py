"""Conv2d: 2-D convolution (cross-correlation, as in PyTorch) as im2col + GEMM."""

import numpy as np

from .. import backend, functional as F
from ..errors import ShapeError
from .init import initial_weight
from .module import Module
from .parameter import Parameter


# Sum the NumPy weight gradient over pieces of this many (window rows x output channels x pixels)
# multiply-adds: OpenBLAS runs such small products 2.5-4x faster per element than one long, thin
# product (LeNet's first layer, 25 x 6 outputs over 100k pixels: 1.34 ms whole, 0.48 ms in
# 4096-pixel pieces; bench/weight_gradient.py).
_WEIGHT_GRADIENT_PIECE = 1 << 20

# A NumPy Conv2d with at most this many output channels per group unfolds its windows a piece
# of about _PIECE_BYTES (at least one output row) at a time, each piece GEMM'd while in cache:
# with so few rows of weights OpenBLAS streams the window matrix at memory speed, and pieces
# make the forward 1.3-1.4x faster (LeNet's first layer, 6 outputs: 0.96 -> 0.69 ms at batch 128;
# the seed's, 8 outputs: 0.34 -> 0.26 ms at batch 64). With 16 (LeNet's second layer) the whole
# matrix's GEMM is compute-bound and pieces cost 40% more (0.75 -> 1.03 ms).
_STREAMED_MAX_OUTPUTS = 8
_PIECE_BYTES = 1 << 18


def _weight_gradient(xp, cols, grad_t):
    """``cols @ grad_t^T`` for (G, K, P) windows and (G, O, P) output gradients: (G, K, O). On NumPy,
    when K*O is small, summed over pixel pieces (see ``_WEIGHT_GRADIENT_PIECE``); (cols @ grad^T)^T
    rather than grad @ cols^T, the same product, is about twice as fast there too."""
    groups, rows, pixels = cols.shape
    outs = grad_t.shape[1]
    piece = 1 << max(0, (_WEIGHT_GRADIENT_PIECE // (rows * outs)).bit_length() - 1)  # a power of two
    if not backend.is_numpy(xp) or piece < 2048 or piece >= pixels:
        return cols @ xp.matrix_transpose(grad_t)
    if groups == 1:  # 2-D products: NumPy's stacked matmul adds a few microseconds per call
        cols, grad_t = cols[0], grad_t[0]
    total = cols[..., :piece] @ xp.matrix_transpose(grad_t[..., :piece])
    for start in range(piece, pixels, piece):
        total += cols[..., start:start + piece] @ xp.matrix_transpose(grad_t[..., start:start + piece])
    return xp.reshape(total, (groups, rows, outs))


def _matmul_into(a, b, out):
    """``out[...] = a @ b`` for NumPy (G, M, K) and (G, K, N), written straight into the (strided)
    view ``out``; 2-D products when G is 1 (NumPy's stacked matmul costs microseconds per call)."""
    if a.shape[0] == 1:
        a, b, out = a[0], b[0], out[0]
    np.matmul(a, b, out=out)


class Conv2d(Module):
    """Convolve an (N, C, H, W) batch with ``weight`` (out_channels, in_channels/groups, kh, kw)
    and add ``bias`` (out_channels,). Kernel size, stride, padding and dilation are ints or
    (h, w) pairs; ``groups`` splits the channels into independent convolutions.

    Forward is ``im2col`` and one GEMM per group (a batched matmul over the groups): with the
    windows as a (C*KH*KW, OH*OW*N) matrix (``functional.im2col_batch_last``),
    ``W (G, out/G, C/G*KH*KW) @ cols`` gives (out, OH, OW, N) and one permute (a view) makes it
    NCHW; the next layers keep that batch-last memory order. Backward is two GEMMs (weight and
    column gradients) and ``col2im``."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, init="he", dtype=None, xp=None, generator=None):
        super().__init__(xp)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = F.as_pair(kernel_size, "kernel_size", 1, "Conv2d")
        self.stride = F.as_pair(stride, "stride", 1, "Conv2d")
        self.padding = F.as_pair(padding, "padding", 0, "Conv2d")
        self.dilation = F.as_pair(dilation, "dilation", 1, "Conv2d")
        self.groups = int(groups)
        if self.in_channels < 1 or self.out_channels < 1 or self.groups < 1:
            raise ValueError(
                f"Conv2d: expected positive in_channels, out_channels and groups, got "
                f"in_channels={in_channels}, out_channels={out_channels}, groups={groups}"
            )
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ValueError(
                f"Conv2d: expected in_channels and out_channels divisible by groups={self.groups}, "
                f"got in_channels={self.in_channels}, out_channels={self.out_channels}"
            )
        self.init = init
        dtype = backend.resolve_dtype(dtype, self.xp, where="Conv2d")
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        w = initial_weight(shape, shape[1] * kh * kw, self.out_channels * kh * kw, init, generator)
        self.weight = Parameter(backend.asarray(w, self.xp, dtype))
        self.bias = Parameter(self.xp.zeros((self.out_channels,), dtype=dtype)) if bias else None
        self._cols = self._image = self._x_shape = self._out_size = None

    def _where(self):
        return f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size})"

    def _grouped_weight(self):
        """The weight as (groups, out/groups, in/groups*kh*kw): a view, no copy."""
        g = self.groups
        return self.xp.reshape(self.weight.data, (g, self.out_channels // g, -1))

    def forward(self, x):
        xp = self.xp
        where = self._where()
        backend.check_array(x, xp, where, self.weight.data.dtype)
        if x.ndim != 4:
            raise ShapeError(f"{where}: expected a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ShapeError(f"{where}: expected input of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        oh, ow = F.window_geometry(tuple(x.shape), self.kernel_size, self.stride, self.padding, self.dilation, where)[-1]
        n = x.shape[0]
        self._x_shape = tuple(x.shape)
        self._out_size = (oh, ow)
        weight = self._grouped_weight()
        if backend.is_numpy(xp) and self.out_channels // self.groups <= _STREAMED_MAX_OUTPUTS:
            self._cols, self._image = None, F.padded_batch_last(x, self.padding)
            y = xp.empty((*weight.shape[:2], oh * ow * n), dtype=x.dtype)
            for start, stop, cols in self._window_pieces():
                _matmul_into(weight, cols, y[..., start:stop])
        else:
            cols = F.im2col_batch_last(x, self.kernel_size, self.stride, self.padding, self.dilation)
            self._cols, self._image = xp.reshape(cols, (self.groups, -1, oh * ow * n)), None
            y = weight @ self._cols
        y = xp.reshape(y, (self.out_channels, oh, ow, n))
        if self.bias is not None:
            y += xp.reshape(self.bias.data, (self.out_channels, 1, 1, 1))
        return xp.permute_dims(y, (3, 0, 1, 2))

    def _window_pieces(self):
        """(start, stop, cols): the window matrix of output pixels start..stop (batch-last order) as
        (G, C/G*KH*KW, stop - start): the whole matrix kept from forward, or for a layer with few
        outputs on NumPy (see ``_STREAMED_MAX_OUTPUTS``) a few output rows at a time, unfolded
        again from the padded input into one buffer, so the matrix never leaves the cache."""
        if self._cols is not None:
            yield 0, self._cols.shape[-1], self._cols
            return
        xp = self.xp
        c, n = self._image.shape[0], self._image.shape[-1]
        (oh, ow), (kh, kw) = self._out_size, self.kernel_size
        rows_per_piece = max(1, _PIECE_BYTES // (c * kh * kw * ow * n * self._image.itemsize))
        buffer = xp.empty(c * kh * kw * min(rows_per_piece, oh) * ow * n, dtype=self._image.dtype)
        for first in range(0, oh, rows_per_piece):
            last = min(oh, first + rows_per_piece)
            piece = xp.reshape(buffer[:c * kh * kw * (last - first) * ow * n], (c, kh, kw, last - first, ow, n))
            F.im2col_rows(self._image, self.kernel_size, self.stride, self.dilation, (first, last), ow, piece)
            yield first * ow * n, last * ow * n, xp.reshape(piece, (self.groups, -1, (last - first) * ow * n))

    def backward(self, grad):
        grad_t = self._accumulate_param_grads(grad)
        grad_cols = self.xp.matrix_transpose(self._grouped_weight()) @ grad_t  # (G, C/G*KH*KW, OH*OW*N)
        grad_cols = self.xp.reshape(grad_cols, (-1, grad_cols.shape[-1]))
        image = F.col2im_batch_last(grad_cols, self._x_shape, self.kernel_size, self.stride, self.padding, self.dilation)
        return self.xp.permute_dims(image, (3, 0, 1, 2))

    def backward_params(self, grad):
        """Weight and bias gradients only: a first layer skips the column GEMM and col2im."""
        self._accumulate_param_grads(grad)

    def _accumulate_param_grads(self, grad):
        """Add the weight and bias gradients; return the output gradient as (G, out/G, OH*OW*N)."""
        xp = self.xp
        g = self.groups
        grad_t = xp.reshape(xp.permute_dims(grad, (1, 2, 3, 0)), (g, self.out_channels // g, -1))
        grad_w = None
        for start, stop, cols in self._window_pieces():
            part = _weight_gradient(xp, cols, grad_t[..., start:stop])
            if grad_w is None:
                grad_w = part
            else:
                grad_w += part
        self.weight.accumulate_grad(xp.reshape(xp.matrix_transpose(grad_w), self.weight.shape))
        if self.bias is not None:
            self.bias.accumulate_grad(xp.sum(xp.reshape(grad_t, (self.out_channels, -1)), axis=1))
        return grad_t

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            s += f", padding={self.padding}"
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s

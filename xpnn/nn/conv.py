"""Conv2d: 2-D convolution (cross-correlation, as in PyTorch) as im2col + GEMM."""

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
        self._cols = None
        self._x_shape = None

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
        cols = F.im2col_batch_last(x, self.kernel_size, self.stride, self.padding, self.dilation)
        self._cols = xp.reshape(cols, (self.groups, -1, oh * ow * n))
        self._x_shape = tuple(x.shape)
        y = xp.reshape(self._grouped_weight() @ self._cols, (self.out_channels, oh, ow, n))
        if self.bias is not None:
            y += xp.reshape(self.bias.data, (self.out_channels, 1, 1, 1))
        return xp.permute_dims(y, (3, 0, 1, 2))

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
        grad_w = xp.matrix_transpose(_weight_gradient(xp, self._cols, grad_t))
        self.weight.accumulate_grad(xp.reshape(grad_w, self.weight.shape))
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

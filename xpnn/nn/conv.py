"""Conv2d: 2-D convolution (cross-correlation, as in PyTorch) as im2col + GEMM."""

from .. import backend, ops
from ..errors import ConfigError, ShapeError
from ..ops import windows
from .init import initial_weight
from .module import Module
from .parameter import Parameter


class Conv2d(Module):
    """Applies a 2-D convolution (cross-correlation, as in PyTorch) over a batch of images.

    Forward unfolds the input's windows into a (C*KH*KW, OH*OW*N) matrix (``ops.conv_windows``)
    and multiplies it by the weight, one GEMM per group; backward is two GEMMs (weight and window
    gradients) and ``col2im``. The output is an NCHW view of an (out, OH, OW, N) buffer: the
    layers that follow keep that batch-last memory order, and the next Conv2d unfolds it in place.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output (the number of filters).
        kernel_size: an int or an (h, w) pair.
        stride: an int or an (h, w) pair. Default 1.
        padding: zero padding added to both sides, an int or an (h, w) pair. Default 0.
        dilation: spacing between kernel elements, an int or an (h, w) pair. Default 1.
        groups: split the channels into this many independent convolutions; must divide
            ``in_channels`` and ``out_channels``. Default 1.
        bias: learn an additive bias per output channel. Default True.
        init: weight initialisation, "he" (default), "xavier" or "normal" (see ``nn.init``).
        dtype: float32 (default), float64 or float16.
        xp: the device or namespace to create the parameters on (default: NumPy).
        generator: a ``numpy.random.Generator`` for the initial weights (default: xpnn's).

    Shape:
        - Input: ``(N, in_channels, H, W)``.
        - Output: ``(N, out_channels, OH, OW)`` with
          ``OH = (H + 2*padding[0] - dilation[0]*(kernel_size[0]-1) - 1) // stride[0] + 1``,
          and likewise OW.

    Attributes:
        weight: ``(out_channels, in_channels/groups, kh, kw)``.
        bias: ``(out_channels,)``, or None.
    """

    _cache = ("_windows", "_x_shape")  # what only backward needs: dropped by a forward under nn.no_grad()

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, init="he", dtype=None, xp=None, generator=None):
        super().__init__(xp)
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = windows.as_pair(kernel_size, "kernel_size", 1, "Conv2d")
        self.stride = windows.as_pair(stride, "stride", 1, "Conv2d")
        self.padding = windows.as_pair(padding, "padding", 0, "Conv2d")
        self.dilation = windows.as_pair(dilation, "dilation", 1, "Conv2d")
        self.groups = int(groups)
        if self.in_channels < 1 or self.out_channels < 1 or self.groups < 1:
            raise ConfigError(
                f"Conv2d: expected positive in_channels, out_channels and groups, got "
                f"in_channels={in_channels}, out_channels={out_channels}, groups={groups}"
            )
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ConfigError(
                f"Conv2d: expected in_channels and out_channels divisible by groups={self.groups}, "
                f"got in_channels={self.in_channels}, out_channels={self.out_channels}"
            )
        self.init = init
        dtype = backend.resolve_dtype(dtype, self.xp, where="Conv2d")
        kh, kw = self.kernel_size
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        w = initial_weight(shape, shape[1] * kh * kw, self.out_channels * kh * kw, init, generator)
        self.weight = Parameter(backend.asarray(w, self.xp, dtype, self.device))
        self.bias = Parameter(self.xp.zeros((self.out_channels,), dtype=dtype, device=self.device)) if bias else None
        self._windows = self._x_shape = None

    def _where(self):
        return f"Conv2d({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size})"

    def _grouped_weight(self):
        """The weight as (groups, out/groups, in/groups*kh*kw): a view, no copy."""
        g = self.groups
        return self.xp.reshape(self.weight.data, (g, self.out_channels // g, -1))

    def forward(self, x):
        xp = self.xp
        where = self._where()
        backend.check_array(x, xp, where, self.weight.data.dtype, self.device)
        if x.ndim != 4:
            raise ShapeError(f"{where}: expected a 4-D (N, C, H, W) input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ShapeError(f"{where}: expected input of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        geometry = windows.window_geometry(tuple(x.shape), self.kernel_size, self.stride, self.padding, self.dilation, where)
        oh, ow = geometry[-1]
        self._x_shape = tuple(x.shape)
        self._windows = ops.conv_windows(x, *geometry, self.groups, self.out_channels // self.groups)
        y = xp.reshape(self._windows.matmul(self._grouped_weight()), (self.out_channels, oh, ow, x.shape[0]))
        if self.bias is not None:
            y += xp.reshape(self.bias.data, (self.out_channels, 1, 1, 1))
        return xp.permute_dims(y, (3, 0, 1, 2))

    def backward(self, grad):
        grad_t = self._accumulate_param_grads(grad)
        grad_cols = self.xp.matrix_transpose(self._grouped_weight()) @ grad_t  # (G, C/G*KH*KW, OH*OW*N)
        grad_cols = self.xp.reshape(grad_cols, (grad_cols.shape[0] * grad_cols.shape[1], grad_cols.shape[-1]))
        image = ops.col2im_batch_last(grad_cols, self._x_shape, self.kernel_size, self.stride, self.padding, self.dilation)
        return self.xp.permute_dims(image, (3, 0, 1, 2))

    def backward_params(self, grad):
        """Weight and bias gradients only: a first layer skips the column GEMM and col2im."""
        self._accumulate_param_grads(grad)

    def _accumulate_param_grads(self, grad):
        """Add the weight and bias gradients; return the output gradient as (G, out/G, OH*OW*N)."""
        xp = self.xp
        g = self.groups
        n, _, oh, ow = grad.shape
        grad_t = xp.reshape(xp.permute_dims(grad, (1, 2, 3, 0)), (g, self.out_channels // g, oh * ow * n))
        grad_w = self._windows.weight_gradient(grad_t)
        self.weight.accumulate_grad(xp.reshape(xp.matrix_transpose(grad_w), self.weight.shape))
        if self.bias is not None:
            self.bias.accumulate_grad(xp.sum(xp.reshape(grad_t, (self.out_channels, oh * ow * n)), axis=1))
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

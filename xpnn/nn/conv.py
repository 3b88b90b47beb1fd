"""Convolutions through the windows objects of ``ops.conv_windows`` (im2col + GEMM, or on NumPy
Winograd tiles or a direct convolution where those are faster): Conv2d (cross-correlation, as in
PyTorch), Conv1d (a Conv2d over a 1-pixel-high image, through the same code) and ConvTranspose2d
(its transpose: GEMM + col2im forward, Conv2d's forward products backward)."""

import numbers

from .. import backend, ops
from ..errors import ConfigError, ShapeError
from ..ops import conv as conv_ops
from ..ops import windows
from .init import initial_weight
from .module import Module
from .parameter import Parameter


def as_single(value, name, minimum, where):
    """``value`` (an int, or a tuple or list of one int, each >= ``minimum``) as a 1-tuple, as
    PyTorch's 1-D layers keep their geometry."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    if not (len(items) == 1 and isinstance(items[0], numbers.Integral) and not isinstance(items[0], bool) and items[0] >= minimum):
        kind = "a positive int" if minimum >= 1 else "a non-negative int"
        raise ConfigError(f"{where}: expected {name} to be {kind} or a tuple of one, got {value!r}")
    return (int(items[0]),)


class _ConvNd(Module):
    """What the convolutions share: channel and group checks, the weight and bias, and the
    batch-last im2col/col2im products over NCHW images (a 1-D layer's image is 1 pixel high).
    A subclass keeps its geometry as 2-D pairs in ``_geometry`` = (kernel, stride, padding,
    dilation)."""

    def _build(self, in_channels, out_channels, groups, bias, init, dtype, generator, weight_shape, fan_in, fan_out):
        name = type(self).__name__
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.groups = int(groups)
        if self.in_channels < 1 or self.out_channels < 1 or self.groups < 1:
            raise ConfigError(
                f"{name}: expected positive in_channels, out_channels and groups, got "
                f"in_channels={in_channels}, out_channels={out_channels}, groups={groups}"
            )
        if self.in_channels % self.groups or self.out_channels % self.groups:
            raise ConfigError(
                f"{name}: expected in_channels and out_channels divisible by groups={self.groups}, "
                f"got in_channels={self.in_channels}, out_channels={self.out_channels}"
            )
        self.init = init
        dtype = backend.resolve_dtype(dtype, self.xp, where=name)
        shape = weight_shape(self.in_channels, self.out_channels, self.groups)
        w = initial_weight(shape, fan_in(shape), fan_out(shape), init, generator)
        self.weight = Parameter(backend.asarray(w, self.xp, dtype, self.device))
        self.bias = Parameter(self.xp.zeros((self.out_channels,), dtype=dtype, device=self.device)) if bias else None

    def _where(self):
        return f"{type(self).__name__}({self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size})"

    def _check_input(self, x, ndim, layout):
        """Check ``x``'s namespace, dtype, device, rank and channel count (``layout`` names the
        axes, as "H, W")."""
        where = self._where()
        backend.check_array(x, self.xp, where, self.weight.data.dtype, self.device)
        if x.ndim != ndim:
            raise ShapeError(f"{where}: expected a {ndim}-D (N, C, {layout}) input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.in_channels:
            raise ShapeError(f"{where}: expected input of shape (N, {self.in_channels}, {layout}), got {tuple(x.shape)}")

    def _grouped_weight(self):
        """The weight as (groups, weight.shape[0]/groups, the rest): a view, no copy."""
        return self.xp.reshape(self.weight.data, (self.groups, self.weight.shape[0] // self.groups, -1))

    def _bias_grad(self, grad_t):
        """Add the bias gradient from the output gradient as (G, out/G, pixels)."""
        if self.bias is not None:
            self.bias.accumulate_grad(self.xp.sum(self.xp.reshape(grad_t, (self.out_channels, grad_t.shape[-1])), axis=1))

    def extra_repr(self):
        s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if any(self.padding):
            s += f", padding={self.padding}"
        if any(d != 1 for d in self.dilation):
            s += f", dilation={self.dilation}"
        if any(getattr(self, "output_padding", ())):
            s += f", output_padding={self.output_padding}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        return s


class _Convolution(_ConvNd):
    """Conv2d's forward and backward over NCHW images, shared by Conv1d."""

    _cache = ("_windows",)  # what only backward needs: dropped by a forward under nn.no_grad()

    def _convolve(self, x):
        """The convolution of a checked NCHW ``x``: an NCHW view of an (out, OH, OW, N) buffer."""
        xp = self.xp
        geometry = windows.window_geometry(tuple(x.shape), *self._geometry, self._where())
        oh, ow = geometry[-1]
        self._windows = ops.conv_windows(x, *geometry, self.groups, self.out_channels // self.groups)
        bias = None if self.bias is None else self.bias.data
        if getattr(self, "_relu_follows", False) and self._windows.rectifies:  # nn.Sequential's fusion
            y = self._windows.matmul(self._grouped_weight(), bias, relu=True)
            object.__setattr__(self, "_relu_mask", xp.permute_dims(self._windows.relu_mask, (3, 0, 1, 2)))
        else:
            y = self._windows.matmul(self._grouped_weight(), bias)
        y = xp.reshape(y, (self.out_channels, oh, ow, x.shape[0]))
        return xp.permute_dims(y, (3, 0, 1, 2))

    def _gradients(self, grad, need_input):
        """Accumulate the weight and bias gradients for the NCHW output gradient ``grad``; return
        the input's as a (C, H, W, N) image when ``need_input`` (the windows' transposed product,
        ``ops.conv_windows``), else None."""
        xp = self.xp
        g = self.groups
        n, _, oh, ow = grad.shape
        grad_t = xp.reshape(xp.permute_dims(grad, (1, 2, 3, 0)), (g, self.out_channels // g, oh * ow * n))
        grad_w, image = self._windows.gradients(self._grouped_weight(), grad_t, need_input)
        self.weight.accumulate_grad(xp.reshape(xp.matrix_transpose(grad_w), self.weight.shape))
        self._bias_grad(grad_t)
        return image


class Conv2d(_Convolution):
    """Applies a 2-D convolution (cross-correlation, as in PyTorch) over a batch of images.

    Forward unfolds the input's windows into a (C*KH*KW, OH*OW*N) matrix (``ops.conv_windows``)
    and multiplies it by the weight, one GEMM per group; backward is two GEMMs (weight and window
    gradients) and ``col2im``. A 1x1, stride-1, unpadded layer takes its batch-last input as the
    matrix, with no copy. On NumPy a 3x3 stride-1 layer with at least 16 channels in and out
    computes the same products as Winograd F(4x4, 3x3) tiles (F(2x2, 3x3) for small even
    outputs), and a stride-1 layer with at most 8 outputs (on several xpnn threads, also one with at
    most 4 inputs and 32 outputs) convolves directly, without the matrix (``docs/design.md``).
    The output is an NCHW view of an (out, OH, OW, N) buffer: the layers that follow keep that
    batch-last memory order, and the next Conv2d unfolds it in place.

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

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, init="he", dtype=None, xp=None, generator=None):
        super().__init__(xp)
        self.kernel_size = windows.as_pair(kernel_size, "kernel_size", 1, "Conv2d")
        self.stride = windows.as_pair(stride, "stride", 1, "Conv2d")
        self.padding = windows.as_pair(padding, "padding", 0, "Conv2d")
        self.dilation = windows.as_pair(dilation, "dilation", 1, "Conv2d")
        self._geometry = (self.kernel_size, self.stride, self.padding, self.dilation)
        kh, kw = self.kernel_size
        self._build(in_channels, out_channels, groups, bias, init, dtype, generator,
                    weight_shape=lambda i, o, g: (o, i // g, kh, kw), fan_in=lambda s: s[1] * kh * kw, fan_out=lambda s: s[0] * kh * kw)
        self._windows = None

    # nn.Sequential asks a Conv2d followed by an nn.ReLU to apply it in its own last pass, where
    # its windows can (the Winograd and direct paths on NumPy); see nn.module._forward_fusing_relu.
    _fuses_relu = True

    def forward(self, x):
        self._check_input(x, 4, "H, W")
        return self._convolve(x)

    def backward(self, grad):
        return self.xp.permute_dims(self._gradients(grad, True), (3, 0, 1, 2))

    def backward_params(self, grad):
        """Weight and bias gradients only: a first layer skips the input gradient's GEMM and col2im."""
        self._gradients(grad, False)


class Conv1d(_Convolution):
    """Applies a 1-D convolution (cross-correlation, as in PyTorch) over a batch of sequences.

    Runs as a :class:`Conv2d` over a 1-pixel-high image, through the same code: the (N, C, L)
    input is viewed as (N, C, 1, L), its windows unfolded by ``ops.conv_windows`` and multiplied
    by the weight; backward is the same two GEMMs and col2im. The output is an (N, C, L) view of
    an (out, L_out, N) buffer, the batch-last order the layers that follow keep.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output (the number of filters).
        kernel_size: an int (or a tuple of one).
        stride: an int. Default 1.
        padding: zero padding added to both ends, an int. Default 0.
        dilation: spacing between kernel elements, an int. Default 1.
        groups: split the channels into this many independent convolutions; must divide
            ``in_channels`` and ``out_channels``. Default 1.
        bias: learn an additive bias per output channel. Default True.
        init: weight initialisation, "he" (default), "xavier" or "normal" (see ``nn.init``).
        dtype: float32 (default), float64 or float16.
        xp: the device or namespace to create the parameters on (default: NumPy).
        generator: a ``numpy.random.Generator`` for the initial weights (default: xpnn's).

    Shape:
        - Input: ``(N, in_channels, L)``.
        - Output: ``(N, out_channels, L_out)`` with
          ``L_out = (L + 2*padding - dilation*(kernel_size-1) - 1) // stride + 1``.

    Attributes:
        weight: ``(out_channels, in_channels/groups, kernel_size)``.
        bias: ``(out_channels,)``, or None.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, init="he", dtype=None, xp=None, generator=None):
        super().__init__(xp)
        self.kernel_size = as_single(kernel_size, "kernel_size", 1, "Conv1d")
        self.stride = as_single(stride, "stride", 1, "Conv1d")
        self.padding = as_single(padding, "padding", 0, "Conv1d")
        self.dilation = as_single(dilation, "dilation", 1, "Conv1d")
        self._geometry = tuple((first, v[0]) for first, v in zip((1, 1, 0, 1), (self.kernel_size, self.stride, self.padding, self.dilation)))
        (k,) = self.kernel_size
        self._build(in_channels, out_channels, groups, bias, init, dtype, generator,
                    weight_shape=lambda i, o, g: (o, i // g, k), fan_in=lambda s: s[1] * k, fan_out=lambda s: s[0] * k)
        self._windows = None

    def forward(self, x):
        self._check_input(x, 3, "L")
        (k,), (p,), (d,) = self.kernel_size, self.padding, self.dilation
        if x.shape[2] + 2 * p < d * (k - 1) + 1:
            raise ShapeError(
                f"{self._where()}: kernel of size {d * (k - 1) + 1} (dilated) is larger than the padded input "
                f"{x.shape[2] + 2 * p} (input shape {tuple(x.shape)}, padding {p})"
            )
        return self._convolve(self.xp.expand_dims(x, axis=2))[:, :, 0, :]

    def backward(self, grad):
        image = self._gradients(self.xp.expand_dims(grad, axis=2), True)
        return self.xp.permute_dims(image, (3, 0, 1, 2))[:, :, 0, :]

    def backward_params(self, grad):
        """Weight and bias gradients only: a first layer skips the input gradient's GEMM and col2im."""
        self._gradients(self.xp.expand_dims(grad, axis=2), False)


class ConvTranspose2d(_ConvNd):
    """Applies a 2-D transposed convolution (the gradient of Conv2d with respect to its input, as
    in PyTorch) over a batch of images.

    Forward is Conv2d's backward: one GEMM per group, ``weight^T @ x``, whose columns are summed
    back into the output image by col2im (``ops.conv.conv_transpose``, the code Conv2d's backward
    runs). Backward is Conv2d's forward over the output gradient: its windows are unfolded
    (``ops.conv_windows``) and multiplied by the weight for the input gradient, and by the input
    for the weight gradient. The output is an NCHW view of a (out, OH, OW, N) buffer.

    Args:
        in_channels: channels of the input image.
        out_channels: channels of the output.
        kernel_size: an int or an (h, w) pair.
        stride: an int or an (h, w) pair. Default 1.
        padding: ``dilation*(kernel_size-1) - padding`` zeros pad both sides of the input, as in
            PyTorch: the output is cropped by ``padding`` on each side. Default 0.
        output_padding: rows and columns added on one side (bottom, right) of the output to
            choose among the output sizes a strided Conv2d maps to the same input size; must be
            smaller than the stride or the dilation (per axis). Default 0.
        groups: split the channels into this many independent convolutions; must divide
            ``in_channels`` and ``out_channels``. Default 1.
        bias: learn an additive bias per output channel. Default True.
        dilation: spacing between kernel elements, an int or an (h, w) pair. Default 1.
        init: weight initialisation, "he" (default), "xavier" or "normal" (see ``nn.init``), with
            PyTorch's fans for this weight: fan_in ``out_channels/groups*kh*kw``, fan_out
            ``in_channels*kh*kw``.
        dtype: float32 (default), float64 or float16.
        xp: the device or namespace to create the parameters on (default: NumPy).
        generator: a ``numpy.random.Generator`` for the initial weights (default: xpnn's).

    Shape:
        - Input: ``(N, in_channels, H, W)``.
        - Output: ``(N, out_channels, OH, OW)`` with
          ``OH = (H-1)*stride[0] - 2*padding[0] + dilation[0]*(kernel_size[0]-1) + output_padding[0] + 1``,
          and likewise OW.

    Attributes:
        weight: ``(in_channels, out_channels/groups, kh, kw)`` (PyTorch's layout).
        bias: ``(out_channels,)``, or None.
    """

    _cache = ("_x_t", "_x_shape")  # what only backward needs: dropped by a forward under nn.no_grad()

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, output_padding=0, groups=1,
                 bias=True, dilation=1, init="he", dtype=None, xp=None, generator=None):
        super().__init__(xp)
        name = "ConvTranspose2d"
        self.kernel_size = windows.as_pair(kernel_size, "kernel_size", 1, name)
        self.stride = windows.as_pair(stride, "stride", 1, name)
        self.padding = windows.as_pair(padding, "padding", 0, name)
        self.output_padding = windows.as_pair(output_padding, "output_padding", 0, name)
        self.dilation = windows.as_pair(dilation, "dilation", 1, name)
        if any(op >= s and op >= d for op, s, d in zip(self.output_padding, self.stride, self.dilation)):
            raise ConfigError(
                f"{name}: expected output_padding smaller than stride or dilation on each axis, got "
                f"output_padding={self.output_padding}, stride={self.stride}, dilation={self.dilation}"
            )
        self._geometry = (self.kernel_size, self.stride, self.padding, self.dilation)
        kh, kw = self.kernel_size
        self._build(in_channels, out_channels, groups, bias, init, dtype, generator,
                    weight_shape=lambda i, o, g: (i, o // g, kh, kw), fan_in=lambda s: s[1] * kh * kw, fan_out=lambda s: s[0] * kh * kw)
        self._x_t = self._x_shape = None

    def output_size(self, input_size):
        """The (OH, OW) output of an (H, W) input (see Shape)."""
        return tuple(
            (size - 1) * s - 2 * p + d * (k - 1) + op + 1
            for size, k, s, p, op, d in zip(input_size, self.kernel_size, self.stride, self.padding, self.output_padding, self.dilation)
        )

    def forward(self, x):
        xp = self.xp
        self._check_input(x, 4, "H, W")
        n, c, h, w = x.shape
        oh, ow = self.output_size((h, w))
        if oh < 1 or ow < 1:
            raise ShapeError(
                f"{self._where()}: expected an input whose output size is positive, got output size {(oh, ow)} "
                f"for input shape {tuple(x.shape)} (padding {self.padding} crops more than the kernel and stride give)"
            )
        g = self.groups
        self._x_shape = tuple(x.shape)
        self._x_t = xp.reshape(xp.permute_dims(x, (1, 2, 3, 0)), (g, c // g, h * w * n))
        image = conv_ops.conv_transpose(self._grouped_weight(), self._x_t, (n, self.out_channels, oh, ow), *self._geometry, (h, w))
        if self.bias is not None:
            image += xp.reshape(self.bias.data, (self.out_channels, 1, 1, 1))
        return xp.permute_dims(image, (3, 0, 1, 2))

    def backward(self, grad):
        cols = self._accumulate_param_grads(grad)
        n, c, h, w = self._x_shape
        grad_x = self.xp.reshape(cols.matmul(self._grouped_weight()), (c, h, w, n))
        return self.xp.permute_dims(grad_x, (3, 0, 1, 2))

    def backward_params(self, grad):
        """Weight and bias gradients only: a first layer skips the input gradient's GEMM."""
        self._accumulate_param_grads(grad)

    def _accumulate_param_grads(self, grad):
        """Add the weight and bias gradients; return the output gradient's windows (the Conv2d
        forward's window matrix, ``ops.conv_windows``)."""
        xp = self.xp
        g = self.groups
        n, c, h, w = self._x_shape
        if self.bias is not None:
            self.bias.accumulate_grad(xp.sum(grad, axis=(0, 2, 3)))
        fit = conv_ops.reached_size(tuple(grad.shape), *self._geometry, (h, w))
        if fit != tuple(grad.shape[2:]):  # output_padding beyond the last window: no weight reaches it
            grad = grad[:, :, :fit[0], :fit[1]]
        geometry = windows.window_geometry(tuple(grad.shape), *self._geometry, self._where())
        cols = ops.conv_windows(grad, *geometry, g, c // g)
        grad_w = cols.weight_gradient(self._x_t)  # (G, out/G*kh*kw, in/G)
        self.weight.accumulate_grad(xp.reshape(xp.matrix_transpose(grad_w), self.weight.shape))
        return cols

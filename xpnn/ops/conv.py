"""The windows of a convolution's input, for Conv2d's three products that read them: the forward
product with the weight, the weight gradient and the input gradient.

Also :func:`conv_transpose`, the transposed product that Conv2d's backward and ConvTranspose2d's
forward share: the (G, K, O) weight's transpose times a (G, O, P) batch-last operand, summed back
into an image by ``col2im_batch_last``.

Door: :func:`conv_windows` takes the input itself as the window matrix of a 1x1, stride-1,
unpadded convolution on every namespace (:class:`PointwiseWindows`). On NumPy it chooses Winograd
tiles (``ops.winograd``, F(4x4, 3x3) or for small even outputs F(2x2, 3x3)) for a 3x3, stride-1
convolution with enough channels on both sides (``WINOGRAD_MIN_CHANNELS``), and a direct
convolution with no window matrix (:class:`DirectWindows`) for an ungrouped stride-1 undilated
layer with few outputs; else it keeps the whole (G, C/G*KH*KW, OH*OW*N) window matrix
(:class:`WindowMatrix`), except on NumPy for another layer with few outputs per group, whose
windows are unfolded again, a few output rows at a time, each time a product needs them
(:class:`StreamedWindows`): with so few rows of weights OpenBLAS streams the matrix at memory
speed, so products over pieces that stay in cache are faster, and only the padded input is kept.
CuPy and the other namespaces otherwise take the window matrix. The measurements behind the
constants are in ``bench/NOTES.md``."""

import numpy as np

from .. import backend, threads
from .activation import rectify_portable
from .gemm import matmul
from .winograd import WinogradWindows
from .windows import col2im_batch_last, im2col_batch_last, im2col_rows, padded_batch_last

# On NumPy, a 3x3 stride-1 convolution with at least this many input and output channels and at
# least WINOGRAD_MIN_PIXELS output pixels (OH*OW*N) runs as Winograd F(m x m, 3x3)
# (``ops.winograd``). With fewer channels or pixels the thin GEMMs and the memory-bound tile
# transforms cost more than the fewer multiplications save. m is WINOGRAD_TILE (4, or 2 to keep to
# F(2x2, 3x3)) when the output's whole 4x4 tiles cover at most WINOGRAD4_MAX_WASTE times its
# pixels: F(4x4, 3x3) was 1.2-1.6x faster than F(2x2, 3x3) on the benchmark layers' steps, even
# where its tiles overhang a 14x14 or 7x7 output by 31%, but not on a 6x6 one (78% more). Else m
# is 2 for an output of whole 2x2 tiles (even height and width); an odd output then stays with
# im2col (``bench/winograd.py``, ``bench/NOTES.md``).
WINOGRAD_MIN_CHANNELS = 16
WINOGRAD_MIN_PIXELS = 8192
WINOGRAD_TILE = 4
WINOGRAD4_MAX_WASTE = 1.5

# A NumPy layer with at most DIRECT_MAX_OUTPUTS outputs, stride 1, undilated and ungrouped,
# convolves directly (DirectWindows: about twice as fast as streaming for LeNet's first layer and
# the seed CNN's, slower than a window matrix from 16 outputs); another with at most
# STREAM_MAX_OUTPUTS outputs per group streams its windows, in pieces of about STREAM_PIECE_BYTES
# (at least one output row).
DIRECT_MAX_OUTPUTS = 8
# On several xpnn threads (xpnn.threads) the direct convolution splits its outputs while im2col
# splits input channels: a layer with at most DIRECT_THREADED_MAX_INPUTS input channels and
# DIRECT_THREADED_MAX_OUTPUTS outputs (the 1 -> 32 first layers, ResNet's 3 -> 16 stem) then
# convolves directly too (bench/NOTES.md).
DIRECT_THREADED_MAX_INPUTS = 4
DIRECT_THREADED_MAX_OUTPUTS = 32
STREAM_MAX_OUTPUTS = 8
STREAM_PIECE_BYTES = 1 << 18

# On NumPy, a thin weight gradient (window rows x outputs small) is summed over pieces of about
# this many multiply-adds: OpenBLAS runs small products faster per element than one long, thin one.
WEIGHT_GRADIENT_PIECE = 1 << 20


def conv_windows(x, kernel, stride, padding, dilation, output_size, groups, outputs_per_group):
    """The windows of NCHW ``x`` for a convolution with this geometry (pairs of ints, already
    validated, as ``window_geometry`` returns them) and ``groups``: an object with
    ``matmul(weight, bias)``, ``weight_gradient(grad)``, ``input_gradient(weight, grad)`` and
    ``gradients(weight, grad, need_input)`` (both, in one pass where that saves work)."""
    if kernel == (1, 1) and stride == (1, 1) and padding == (0, 0):
        return PointwiseWindows(x, groups)
    numba = backend.fast_path(backend.namespace_of(x)) == "numba"
    tile = winograd_tile(x, kernel, stride, dilation, output_size, groups, outputs_per_group) if numba else None
    if tile:
        return WinogradWindows(x, padding, output_size, tile)
    direct = stride == (1, 1) and dilation == (1, 1) and groups == 1 and backend.kernel_dtype(x)
    if numba and direct and direct_fits(x.shape[1], outputs_per_group):
        return DirectWindows(x, kernel, padding, output_size)
    if numba and outputs_per_group <= STREAM_MAX_OUTPUTS:
        return StreamedWindows(x, kernel, stride, padding, dilation, output_size, groups)
    return WindowMatrix(x, kernel, stride, padding, dilation, output_size, groups)


def direct_fits(inputs, outputs):
    """Whether a stride-1, undilated, ungrouped NumPy layer with these channel counts convolves
    directly: at most ``DIRECT_MAX_OUTPUTS`` outputs, or on several xpnn threads at most
    ``DIRECT_THREADED_MAX_INPUTS`` inputs and ``DIRECT_THREADED_MAX_OUTPUTS`` outputs."""
    if outputs <= DIRECT_MAX_OUTPUTS:
        return True
    return threads.get_num_threads() > 1 and inputs <= DIRECT_THREADED_MAX_INPUTS and outputs <= DIRECT_THREADED_MAX_OUTPUTS


def winograd_tile(x, kernel, stride, dilation, output_size, groups, outputs):
    """The m of the Winograd F(m x m, 3x3) that computes this convolution on NumPy, or None where
    Winograd does not pay: it needs 3x3, stride 1, undilated, one group, float32 or float64, at
    least ``WINOGRAD_MIN_CHANNELS`` input and output channels and at least
    ``WINOGRAD_MIN_PIXELS`` output pixels. Then m is 4 when ``WINOGRAD_TILE`` is 4 and whole 4x4
    tiles cover the output with at most ``WINOGRAD4_MAX_WASTE`` times its pixels, else 2 for an
    output of whole 2x2 tiles (even height and width)."""
    (oh, ow), n = output_size, x.shape[0]
    fits = (
        kernel == (3, 3) and stride == (1, 1) and dilation == (1, 1) and groups == 1 and backend.kernel_dtype(x)
        and min(x.shape[1], outputs) >= WINOGRAD_MIN_CHANNELS and oh * ow * n >= WINOGRAD_MIN_PIXELS
    )
    if not fits:
        return None
    tiled = (4 * -(-oh // 4)) * (4 * -(-ow // 4))
    if WINOGRAD_TILE == 4 and min(oh, ow) >= 4 and tiled <= WINOGRAD4_MAX_WASTE * oh * ow:
        return 4
    return 2 if oh % 2 == 0 and ow % 2 == 0 else None


def conv_transpose(weight, operand, image_shape, kernel, stride, padding, dilation, windows):
    """The transpose of a grouped convolution: ``weight^T @ operand`` for a (G, O, K) weight
    (K = C/G*KH*KW window rows) and a (G, O, OH*OW*N) batch-last operand, summed back into the
    (C, H, W, N) image of NCHW ``image_shape`` by ``col2im_batch_last``; ``windows`` is (OH, OW).
    Rows and columns of the image beyond the last window's reach (a transposed convolution's
    output_padding of at least its stride) get zeros."""
    xp = backend.namespace_of(operand)
    n, c, h, w = image_shape
    cols = matmul(xp.matrix_transpose(weight), operand)
    cols = xp.reshape(cols, (cols.shape[0] * cols.shape[1], cols.shape[-1]))
    fit = reached_size(image_shape, kernel, stride, padding, dilation, windows)
    image = col2im_batch_last(cols, (n, c, *fit), kernel, stride, padding, dilation)
    if fit == (h, w):
        return image
    full = xp.zeros((c, h, w, n), dtype=image.dtype, device=backend.device_of(image))
    full[:, :fit[0], :fit[1], :] = image
    return full


def reached_size(image_shape, kernel, stride, padding, dilation, windows):
    """The (H', W') <= (H, W) of NCHW ``image_shape`` over which this geometry has exactly
    ``windows`` = (OH, OW) windows: H less a stride for each window beyond OH, likewise W. What
    a transposed convolution's output_padding adds beyond the last window is out of reach."""
    fit = []
    for size, k, s, p, d, o in zip(image_shape[2:], kernel, stride, padding, dilation, windows):
        fit.append(size - s * ((size + 2 * p - d * (k - 1) - 1) // s + 1 - o))
    return tuple(fit)


class _Windows:
    """What the window matrices share: the geometry, the bias, and the input gradient."""

    # Whether ``matmul(weight, bias, relu=True)`` applies a following ReLU in its last pass and
    # leaves the uint8 mask of the kept values in ``relu_mask`` (``nn.Sequential``'s fusion).
    rectifies = False

    def _keep_geometry(self, x, kernel, stride, padding, dilation, output_size):
        self.x_shape, self.geometry, self.output_size = tuple(x.shape), (kernel, stride, padding, dilation), output_size

    def _add_bias(self, y, bias):
        if bias is not None:
            y += self.xp.reshape(bias, (y.shape[0], y.shape[1], 1))
        return y

    def input_gradient(self, weight, grad):
        """The input gradient, (C, H, W, N) batch-last, for the (G, O, K) weight and the
        (G, O, OH*OW*N) output gradient: :func:`conv_transpose`."""
        return conv_transpose(weight, grad, self.x_shape, *self.geometry, self.output_size)

    def gradients(self, weight, grad, need_input):
        """The weight gradient (G, K, O) and, when ``need_input``, the input gradient (else None)."""
        return self.weight_gradient(grad), self.input_gradient(weight, grad) if need_input else None


class WindowMatrix(_Windows):
    """The whole window matrix of ``im2col_batch_last``, as (G, C/G*KH*KW, OH*OW*N)."""

    def __init__(self, x, kernel, stride, padding, dilation, output_size, groups):
        xp = backend.namespace_of(x)
        cols = im2col_batch_last(x, kernel, stride, padding, dilation)
        self.xp = xp
        self.cols = xp.reshape(cols, (groups, cols.shape[0] // groups, cols.shape[-1]))
        self._keep_geometry(x, kernel, stride, padding, dilation, output_size)

    def pieces(self):
        """(start, stop, cols) over the output pixels: here one piece, the whole matrix."""
        yield 0, self.cols.shape[-1], self.cols

    def matmul(self, weight, bias=None):
        """``weight (G, O, K) @ windows``, plus ``bias`` (G*O values) when given: the
        (G, O, OH*OW*N) convolution output."""
        return self._add_bias(matmul(weight, self.cols), bias)

    def weight_gradient(self, grad):
        """``windows @ grad^T`` for the (G, O, OH*OW*N) output gradient: (G, K, O)."""
        return weight_gradient(self.xp, self.cols, grad)


class PointwiseWindows(WindowMatrix):
    """A 1x1, stride-1, unpadded convolution's windows: the batch-last input itself, as (G, C/G,
    H*W*N), with no im2col copy (a view when the input is laid out batch-last, as a layer's output
    is; one copy otherwise). The products are a window matrix's; the input gradient, the weight's
    transpose times the output gradient, is already the (C, H, W, N) image, with no col2im. Every
    namespace. Like Winograd's unpadded input (``windows.padded_batch_last``), the matrix may be
    the caller's array itself: changing the input in place before backward changes the weight
    gradient, as in PyTorch, which also saves the input (and refuses the change)."""

    def __init__(self, x, groups):
        xp = backend.namespace_of(x)
        n, c, h, w = x.shape
        image = backend.c_contiguous(xp.permute_dims(x, (1, 2, 3, 0)))
        self.xp = xp
        self.cols = xp.reshape(image, (groups, c // groups, h * w * n))
        self._keep_geometry(x, (1, 1), (1, 1), (0, 0), (1, 1), (h, w))

    def input_gradient(self, weight, grad):
        """``weight^T @ grad`` for the (G, O, C/G) weight and (G, O, H*W*N) output gradient: the
        (C, H, W, N) input gradient."""
        n, c, h, w = self.x_shape
        return self.xp.reshape(matmul(self.xp.matrix_transpose(weight), grad), (c, h, w, n))


class DirectWindows(_Windows):
    """A stride-1, undilated, ungrouped convolution's padded batch-last (C, Hp, Wp, N) input, for a
    direct convolution: each output row of a channel is OW*N contiguous values, each kernel tap
    adds a weight times a run of the input (forward) or takes a dot product with one (weight
    gradient). Door: ``numba_windows.direct_conv`` and ``direct_weight_gradient`` for C-contiguous
    float32/float64 NumPy arrays, else :func:`direct_conv_portable` and
    :func:`direct_weight_gradient_portable`. The input gradient is the window matrices' (``_Windows``)."""

    def __init__(self, x, kernel, padding, output_size):
        self.xp = backend.namespace_of(x)
        self.image = padded_batch_last(x, padding)  # C-contiguous
        self.kernel = kernel
        self.rectifies = backend.fast_path(self.xp) == "numba"
        self.relu_mask = None
        self._keep_geometry(x, kernel, (1, 1), padding, (1, 1), output_size)

    def matmul(self, weight, bias=None, relu=False):
        """The (1, O, OH*OW*N) convolution with a (1, O, C*KH*KW) weight, plus ``bias``; with
        ``relu``, rectified, the (O, OH, OW, N) uint8 mask of the kept values in ``relu_mask``
        (each output row rectified while in cache by the compiled loop)."""
        xp = self.xp
        o = weight.shape[1]
        weight4 = xp.reshape(weight, (o, self.image.shape[0], *self.kernel))
        if bias is None:
            bias = xp.zeros((o,), dtype=weight.dtype, device=backend.device_of(weight))
        if backend.numba_fits(self.image, weight, bias):
            from ..kernels import numba_windows

            y = numba_windows.direct_conv(self.image, weight4, bias, self.output_size, relu)
            if relu:
                y, self.relu_mask = y
        else:
            y = direct_conv_portable(self.image, weight4, bias, self.output_size)
            if relu:
                y, self.relu_mask = rectify_portable(y)
        return xp.reshape(y, (1, o, -1))

    def weight_gradient(self, grad):
        """The (1, C*KH*KW, O) weight gradient for the (1, O, OH*OW*N) output gradient."""
        xp = self.xp
        o = grad.shape[1]
        grad_image = backend.c_contiguous(xp.reshape(grad, (o, *self.output_size, self.x_shape[0])))
        if backend.numba_fits(self.image, grad_image):
            from ..kernels import numba_windows

            grad_w = numba_windows.direct_weight_gradient(self.image, grad_image, self.kernel)
        else:
            grad_w = direct_weight_gradient_portable(self.image, grad_image, self.kernel)
        return xp.matrix_transpose(xp.reshape(grad_w, (1, o, -1)))


def direct_conv_portable(image, weight, bias, output_size):
    """:class:`DirectWindows`' forward in Array API calls: one strided multiply-add per kernel tap
    over the whole (O, OH, OW, N) output."""
    xp = backend.namespace_of(image)
    o, c, kh, kw = weight.shape
    (oh, ow), n = output_size, image.shape[-1]
    out = xp.zeros((o, oh, ow, n), dtype=image.dtype, device=backend.device_of(image)) + xp.reshape(bias, (o, 1, 1, 1))
    for channel in range(c):
        for i in range(kh):
            for j in range(kw):
                out += xp.reshape(weight[:, channel, i, j], (o, 1, 1, 1)) * image[channel:channel + 1, i:i + oh, j:j + ow, :]
    return out


def direct_weight_gradient_portable(image, grad, kernel):
    """:class:`DirectWindows`' weight gradient in Array API calls: one product and sum per kernel
    tap, as (O, C, KH, KW)."""
    xp = backend.namespace_of(image)
    o, oh, ow, _ = grad.shape
    c, (kh, kw) = image.shape[0], kernel
    taps = [xp.sum(grad * image[channel:channel + 1, i:i + oh, j:j + ow, :], axis=(1, 2, 3))
            for channel in range(c) for i in range(kh) for j in range(kw)]
    return xp.reshape(xp.permute_dims(xp.stack(taps), (1, 0)), (o, c, kh, kw))


class StreamedWindows(_Windows):
    """The windows of a padded batch-last input, unfolded a piece of a few output rows at a time
    into one reused buffer (NumPy only: products are written into views with ``out=``)."""

    def __init__(self, x, kernel, stride, padding, dilation, output_size, groups):
        self.xp = backend.namespace_of(x)
        self.image = padded_batch_last(x, padding)
        self.kernel, self.stride, self.dilation, self.groups = kernel, stride, dilation, groups
        self.out_size = output_size
        self.pixels = self.out_size[0] * self.out_size[1] * x.shape[0]
        self._keep_geometry(x, kernel, stride, padding, dilation, output_size)

    def pieces(self):
        """(start, stop, cols): the windows of output pixels start..stop (batch-last order) as
        (G, C/G*KH*KW, stop - start), each piece overwriting the last one's buffer."""
        xp = self.xp
        c, n = self.image.shape[0], self.image.shape[-1]
        (oh, ow), (kh, kw) = self.out_size, self.kernel
        rows_per_piece = max(1, STREAM_PIECE_BYTES // (c * kh * kw * ow * max(n, 1) * self.image.itemsize))
        buffer = xp.empty(c * kh * kw * min(rows_per_piece, oh) * ow * n, dtype=self.image.dtype)
        for first in range(0, oh, rows_per_piece):
            last = min(oh, first + rows_per_piece)
            piece = xp.reshape(buffer[:c * kh * kw * (last - first) * ow * n], (c, kh, kw, last - first, ow, n))
            im2col_rows(self.image, self.kernel, self.stride, self.dilation, (first, last), ow, piece)
            yield first * ow * n, last * ow * n, xp.reshape(piece, (self.groups, c * kh * kw // self.groups, (last - first) * ow * n))

    def matmul(self, weight, bias=None):
        xp = self.xp
        y = xp.empty((*weight.shape[:2], self.pixels), dtype=self.image.dtype)
        for start, stop, cols in self.pieces():
            _matmul_into(weight, cols, y[..., start:stop])
        return self._add_bias(y, bias)

    def weight_gradient(self, grad):
        total = None
        for start, stop, cols in self.pieces():
            part = weight_gradient(self.xp, cols, grad[..., start:stop])
            if total is None:
                total = part
            else:
                total += part
        return total


def weight_gradient(xp, cols, grad):
    """``cols @ grad^T`` for (G, K, P) windows and (G, O, P) output gradients: (G, K, O). On NumPy,
    when K*O is small, summed over pixel pieces (see ``WEIGHT_GRADIENT_PIECE``); (cols @ grad^T)
    rather than the transpose of grad @ cols^T, the same product, is the faster one there too."""
    groups, rows, pixels = cols.shape
    outs = grad.shape[1]
    piece = 1 << max(0, (WEIGHT_GRADIENT_PIECE // (rows * outs)).bit_length() - 1)  # a power of two
    if backend.fast_path(xp) != "numba" or piece < 2048 or piece >= pixels:
        return matmul(cols, xp.matrix_transpose(grad))
    if groups == 1:  # 2-D products: NumPy's stacked matmul adds a few microseconds per call
        cols, grad = cols[0], grad[0]

    def summed(first, stop):  # the pixels of pieces first..stop-1
        low, high = first * piece, min(stop * piece, pixels)
        total = cols[..., low:low + piece] @ xp.matrix_transpose(grad[..., low:low + piece])
        for start in range(low + piece, high, piece):
            total += cols[..., start:min(start + piece, high)] @ xp.matrix_transpose(grad[..., start:min(start + piece, high)])
        return total

    partials = threads.run(summed, threads.ranges(-(-pixels // piece)))  # one range each of xpnn's threads
    total = partials[0]
    for part in partials[1:]:
        total += part
    return xp.reshape(total, (groups, rows, outs))


def _matmul_into(a, b, out):
    """``out[...] = a @ b`` for NumPy (G, M, K) and (G, K, N), written straight into the (strided)
    view ``out``; 2-D products when G is 1 (NumPy's stacked matmul costs microseconds per call)."""
    if a.shape[0] == 1:
        a, b, out = a[0], b[0], out[0]
    np.matmul(a, b, out=out)

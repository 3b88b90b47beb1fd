"""Convolution windows: the geometry of sliding windows, im2col and col2im (NCHW and Conv2d's
batch-last layout), and the scatter of per-offset window gradients that pooling shares.

Doors with fast paths: :func:`im2col_batch_last`, :func:`im2col_rows` and
:func:`col2im_batch_last` choose the Numba loops (``xpnn.kernels.numba_windows``), the CUDA
kernels (``xpnn.kernels.cuda_windows``) or the portable loops over kernel offsets beside them."""

import numbers

from .. import backend
from ..errors import ConfigError, ShapeError
from . import layout


def as_pair(value, name, minimum=0, where="as_pair"):
    """``value`` (an int or a pair of ints, each >= ``minimum``) as an (h, w) tuple of ints."""
    items = value if isinstance(value, (tuple, list)) else (value, value)
    ok = len(items) == 2 and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum for v in items)
    if not ok:
        kind = "a positive int" if minimum >= 1 else "a non-negative int"
        raise ConfigError(f"{where}: expected {name} to be {kind} or a pair of them, got {value!r}")
    return int(items[0]), int(items[1])


def conv_output_size(input_size, kernel_size, stride=1, padding=0, dilation=1):
    """Output size of a convolution or pooling window, as in PyTorch (no ceil mode):
    ``(size + 2*padding - dilation*(kernel_size-1) - 1) // stride + 1`` per axis.
    Every argument is an int or an (h, w) pair; the result is an int when all are ints, else a
    pair. A result below 1 means the dilated kernel does not fit in the padded input."""
    args = (input_size, kernel_size, stride, padding, dilation)
    h, w = as_pair(input_size, "input_size", 0, "conv_output_size")
    kh, kw = as_pair(kernel_size, "kernel_size", 1, "conv_output_size")
    sh, sw = as_pair(stride, "stride", 1, "conv_output_size")
    ph, pw = as_pair(padding, "padding", 0, "conv_output_size")
    dh, dw = as_pair(dilation, "dilation", 1, "conv_output_size")
    out = ((h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1)
    return out[0] if all(isinstance(a, numbers.Integral) for a in args) else out


def pad2d(x, padding, value=0.0):
    """``x`` (..., H, W) padded by (ph, pw) on both sides of its last two axes with ``value``.
    The standard has no ``pad``: this fills a new array and assigns the interior slice. Returns
    ``x`` itself when there is nothing to pad."""
    ph, pw = as_pair(padding, "padding", 0, "pad2d")
    if ph == 0 and pw == 0:
        return x
    xp = backend.namespace_of(x)
    *lead, h, w = x.shape
    out = xp.full((*lead, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype, device=backend.device_of(x))
    out[..., ph:ph + h, pw:pw + w] = x
    return out


def window_slices(kernel_size, stride, dilation, output_size):
    """The window machinery shared by im2col, col2im and pooling: for each kernel offset (i, j),
    row-major, the pair of slices that picks, from a padded image (..., Hp, Wp), the element at
    that offset of every output window: an (..., OH, OW) strided view. Loops over these KH*KW
    offsets replace loops over output pixels."""
    kh, kw = as_pair(kernel_size, "kernel_size", 1, "window_slices")
    sh, sw = as_pair(stride, "stride", 1, "window_slices")
    dh, dw = as_pair(dilation, "dilation", 1, "window_slices")
    oh, ow = as_pair(output_size, "output_size", 1, "window_slices")
    return [
        (i, j, (slice(i * dh, i * dh + sh * (oh - 1) + 1, sh), slice(j * dw, j * dw + sw * (ow - 1) + 1, sw)))
        for i in range(kh)
        for j in range(kw)
    ]


def window_geometry(shape, kernel_size, stride=1, padding=0, dilation=1, where="window_geometry"):
    """``(kernel, stride, padding, dilation, output_size)`` as (h, w) pairs for windows over an
    input of ``shape`` (N, C, H, W); raises ShapeError, prefixed with ``where``, when the input is
    not 4-D or the dilated kernel is larger than the padded input."""
    if len(shape) != 4:
        raise ShapeError(f"{where}: expected a 4-D (N, C, H, W) input, got shape {tuple(shape)}")
    kernel = as_pair(kernel_size, "kernel_size", 1, where)
    stride = as_pair(stride, "stride", 1, where)
    padding = as_pair(padding, "padding", 0, where)
    dilation = as_pair(dilation, "dilation", 1, where)
    out = conv_output_size(tuple(shape[2:]), kernel, stride, padding, dilation)
    if out[0] < 1 or out[1] < 1:
        span = tuple(d * (k - 1) + 1 for k, d in zip(kernel, dilation))
        padded = tuple(s + 2 * p for s, p in zip(shape[2:], padding))
        raise ShapeError(
            f"{where}: kernel of size {span} (dilated) is larger than the padded input {padded} "
            f"(input shape {tuple(shape)}, padding {padding})"
        )
    return kernel, stride, padding, dilation, out


def scatter_windows(parts, x_shape, padding, slices):
    """Add the list of per-kernel-offset (N, C, OH, OW) window gradients ``parts`` (in the order of
    ``slices``, from :func:`window_slices`) back into an (N, C, H, W) input, cropping the padding:
    the transpose of reading each offset's strided view of the padded input."""
    xp = backend.namespace_of(parts[0])
    n, c, h, w = x_shape
    ph, pw = padding
    grad = xp.zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=parts[0].dtype, device=backend.device_of(parts[0]))
    for (_, _, (rows, cols)), part in zip(slices, parts):
        grad[:, :, rows, cols] += part
    return grad[:, :, ph:ph + h, pw:pw + w]


def im2col(x, kernel_size, stride=1, padding=0, dilation=1):
    """Unfold the sliding windows of an NCHW batch into an ``(N*OH*OW, C*KH*KW)`` matrix.

    Row ``n*OH*OW + oh*OW + ow`` is output pixel (n, oh, ow); column ``c*KH*KW + kh*KW + kw`` is
    kernel element (c, kh, kw): the order of ``weight.reshape(out_channels, -1)`` and of
    ``torch.nn.functional.unfold``. Zero padding. Geometry arguments are ints or (h, w) pairs.
    A reordered copy of :func:`im2col_batch_last`, the layout Conv2d computes in."""
    xp = backend.namespace_of(x)
    n, c = x.shape[:2]
    (kh, kw), _, _, _, (oh, ow) = window_geometry(tuple(x.shape), kernel_size, stride, padding, dilation, "im2col")
    cols = xp.reshape(im2col_batch_last(x, kernel_size, stride, padding, dilation), (c * kh * kw, oh, ow, n))
    return xp.reshape(xp.permute_dims(cols, (3, 1, 2, 0)), (n * oh * ow, c * kh * kw))


def col2im(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """The exact transpose of :func:`im2col`: scatter an ``(N*OH*OW, C*KH*KW)`` matrix back into
    an NCHW array of shape ``x_shape``, adding where windows overlap, then cropping the padding.
    ``<im2col(x), cols> == <x, col2im(cols)>``. Reorders ``cols`` and calls :func:`col2im_batch_last`."""
    xp = backend.namespace_of(cols)
    x_shape = tuple(int(d) for d in x_shape)
    (kh, kw), _, _, _, (oh, ow) = window_geometry(x_shape, kernel_size, stride, padding, dilation, "col2im")
    n, c = x_shape[:2]
    if tuple(cols.shape) != (n * oh * ow, c * kh * kw):
        raise ShapeError(f"col2im: expected cols of shape {(n * oh * ow, c * kh * kw)} for x_shape {x_shape}, got {tuple(cols.shape)}")
    by_kernel = xp.reshape(xp.permute_dims(xp.reshape(cols, (n, oh, ow, c * kh * kw)), (3, 1, 2, 0)), (c * kh * kw, -1))
    image = col2im_batch_last(by_kernel, x_shape, kernel_size, stride, padding, dilation)
    return xp.permute_dims(image, (3, 0, 1, 2))


def im2col_batch_last(x, kernel_size, stride=1, padding=0, dilation=1):
    """The windows of an NCHW batch (any strides) as a C-contiguous ``(C*KH*KW, OH*OW*N)`` matrix:
    row ``c*KH*KW + kh*KW + kw`` is kernel element (c, kh, kw), column ``(oh*OW + ow)*N + n`` is
    output pixel (n, oh, ow). Conv2d forward is then one GEMM, ``W (out, C*KH*KW) @ cols``, whose
    (out, OH, OW, N) result is NCHW through one permute (a view).

    Why the batch last: the zero-padded image is laid out (C, Hp, Wp, N), so each kernel offset's
    windows are one strided slice whose inner runs are OW*N elements long, and the copies that fill
    the buffer move long runs (with the batch first, as in Chainer, they move runs of OW elements;
    ``bench/im2col_paths.py`` compares them). The pooling and activation layers that follow work
    in whatever memory order they are given, so the layout carries through the network.

    Door: on CUDA one kernel launch reads ``x`` in place (no padded copy); elsewhere the padded
    image is unfolded by :func:`im2col_rows`."""
    xp = backend.namespace_of(x)
    (kh, kw), stride, padding, dilation, (oh, ow) = window_geometry(tuple(x.shape), kernel_size, stride, padding, dilation, "im2col")
    n, c = x.shape[:2]
    if backend.fast_path(xp) == "cuda" and backend.kernel_dtype(x):
        from ..kernels import cuda_windows

        buf = cuda_windows.im2col_blocks(x, (kh, kw), stride, padding, dilation, (oh, ow))
    else:
        buf = xp.empty((c, kh, kw, oh, ow, n), dtype=x.dtype, device=backend.device_of(x))
        im2col_rows(padded_batch_last(x, padding), (kh, kw), stride, dilation, (0, oh), ow, buf)
    return xp.reshape(buf, (c * kh * kw, oh * ow * n))


def im2col_rows(image, kernel_size, stride, dilation, rows, out_width, out):
    """Fill ``out`` (C, KH, KW, R, OW, N) with the windows of output rows ``rows`` = (start, stop)
    of a padded batch-last image (C, Hp, Wp, N), as in :func:`im2col_batch_last`; returns ``out``.

    Door: on NumPy with C-contiguous float32/float64 arrays one compiled pass (``numba_windows.im2col_rows``:
    Conv2d's pieces of a few rows cannot afford a NumPy call per kernel offset); elsewhere
    :func:`im2col_rows_portable`."""
    if backend.numba_fits(image, out):
        from ..kernels import numba_windows

        return numba_windows.im2col_rows(image, out, rows[0], stride, dilation)
    return im2col_rows_portable(image, kernel_size, stride, dilation, rows, out_width, out)


def im2col_rows_portable(image, kernel_size, stride, dilation, rows, out_width, out):
    """:func:`im2col_rows` in Array API calls: one strided copy per kernel offset."""
    start, stop = rows
    for i, j, (window_rows, window_cols) in window_slices(kernel_size, stride, dilation, (stop - start, out_width)):
        first = start * stride[0] + window_rows.start
        out[:, i, j, ...] = image[:, first:first + window_rows.stop - window_rows.start:stride[0], window_cols, :]
    return out


def padded_batch_last(x, padding, size=None):
    """NCHW ``x`` as a zero-padded, C-contiguous (C, Hp, Wp, N) image: ``padding`` zeros before
    and after, or after up to ``size`` = (Hp, Wp) when given (Winograd's whole tiles); a view of
    ``x`` when it already is one (a batch-last layer output, no padding)."""
    xp = backend.namespace_of(x)
    ph, pw = padding
    n, c, h, w = x.shape
    size = (h + 2 * ph, w + 2 * pw) if size is None else tuple(size)
    batch_last = xp.permute_dims(x, (1, 2, 3, 0))
    if (ph, pw) == (0, 0) and (h, w) == size and backend.is_c_contiguous(batch_last):
        return batch_last
    return layout.padded(batch_last, (c, *size, n), (0, ph, pw, 0))


def col2im_batch_last(cols, x_shape, kernel_size, stride=1, padding=0, dilation=1):
    """The exact transpose of :func:`im2col_batch_last`: sum a ``(C*KH*KW, OH*OW*N)`` matrix back
    into the image, adding where windows overlap, and return it batch-last, as a (C, H, W, N)
    array (NCHW through ``permute_dims(image, (3, 0, 1, 2))``).

    Door: the Numba loop on NumPy, one CUDA launch on CuPy (each pixel gathers its own terms), and
    :func:`col2im_image_portable` elsewhere and for float16; all three add each pixel's terms in
    the same order."""
    xp = backend.namespace_of(cols)
    x_shape = tuple(int(d) for d in x_shape)
    (kh, kw), stride, (ph, pw), dilation, (oh, ow) = window_geometry(x_shape, kernel_size, stride, padding, dilation, "col2im")
    n, c, h, w = x_shape
    if tuple(cols.shape) != (c * kh * kw, oh * ow * n):
        raise ShapeError(f"col2im: expected cols of shape {(c * kh * kw, oh * ow * n)} for x_shape {x_shape}, got {tuple(cols.shape)}")
    blocks = xp.reshape(cols, (c, kh, kw, oh, ow, n))
    path = backend.fast_path(xp) if backend.kernel_dtype(cols) else "portable"
    if path == "cuda":
        from ..kernels import cuda_windows

        return cuda_windows.col2im_image(blocks, x_shape, stride, (ph, pw), dilation)
    if path == "numba":
        from ..kernels import numba_windows

        image = numba_windows.col2im_image(blocks, (h + 2 * ph, w + 2 * pw), stride, dilation)
    else:
        image = col2im_image_portable(blocks, (h + 2 * ph, w + 2 * pw), stride, dilation)
    return image[:, ph:ph + h, pw:pw + w, :]


def col2im_image_portable(blocks, padded_size, stride, dilation):
    """Portable col2im: add each kernel offset's strided slice of the (C, KH, KW, OH, OW, N)
    window buffer into a zero (C, Hp, Wp, N) image, in kernel-offset order."""
    xp = backend.namespace_of(blocks)
    c, kh, kw, oh, ow, n = blocks.shape
    image = xp.zeros((c, *padded_size, n), dtype=blocks.dtype, device=backend.device_of(blocks))
    for i, j, (rows, columns) in window_slices((kh, kw), stride, dilation, (oh, ow)):
        image[:, rows, columns, :] += blocks[:, i, j, ...]
    return image

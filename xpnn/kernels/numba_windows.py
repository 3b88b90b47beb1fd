"""Window loops for NumPy compiled by Numba: im2col, col2im, and the max pool over tiling windows.
im2col: one pass instead of a NumPy call per kernel offset, which Conv2d's pieces of a few output
rows could not afford (and faster on a whole LeNet step too). col2im: the portable version adds
one strided slice per kernel offset, reading and writing the whole image each time; this loop
makes one pass over the window buffer while one channel of the image stays in cache. Max pool:
one pass over the input instead of a compare, a maximum and a mask per window element.
Each loop splits its outer axis (channels, or outputs) over xpnn's threads (``xpnn.threads``),
not Numba's: spinning OpenMP workers starved OpenBLAS's threads. The measurements are in
``bench/NOTES.md``."""

import numba
import numpy as np

from .. import threads
from . import numba_elementwise


@numba.njit(cache=True, nogil=True)
def _im2col_rows(image, out, first, sh, sw, dh, dw):
    channels, kh, kw, rows, ow, n_images = out.shape
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                for r in range(rows):
                    for q in range(ow):
                        window = out[c, i, j, r, q]
                        pixel = image[c, (first + r) * sh + i * dh, q * sw + j * dw]
                        for n in range(n_images):
                            window[n] = pixel[n]


def im2col_rows(image, out, first, stride, dilation):
    """Fill a C-contiguous (C, KH, KW, R, OW, N) ``out`` with the windows of output rows
    first..first+R of a C-contiguous padded (C, Hp, Wp, N) image, in one call: the portable loop
    costs a NumPy call per kernel offset, which Conv2d's few-row pieces cannot afford."""
    threads.run(lambda s, e: _im2col_rows(image[s:e], out[s:e], first, *stride, *dilation), threads.spans(out.shape[0], out[0].size))
    return out


@numba.njit(cache=True, nogil=True)
def _col2im(blocks, image, sh, sw, dh, dw):
    channels, kh, kw, oh, ow, n_images = blocks.shape
    for c in range(channels):
        image[c] = 0
        for i in range(kh):
            for j in range(kw):
                for r in range(oh):
                    for q in range(ow):
                        pixel = image[c, r * sh + i * dh, q * sw + j * dw]
                        window = blocks[c, i, j, r, q]
                        for n in range(n_images):
                            pixel[n] += window[n]


def col2im_image(blocks, padded_size, stride, dilation):
    """Sum a (C, KH, KW, OH, OW, N) window buffer into a new (C, Hp, Wp, N) padded image, each
    pixel's terms added in the portable version's order (so the results are identical)."""
    c, n = blocks.shape[0], blocks.shape[-1]
    image = np.empty((c, *padded_size, n), dtype=blocks.dtype)
    blocks = np.ascontiguousarray(blocks)
    threads.run(lambda s, e: _col2im(blocks[s:e], image[s:e], *stride, *dilation), threads.spans(c, blocks[0].size))
    return image


@numba.njit(cache=True, nogil=True)
def _max_pool_tiles(x, kh, kw, best, arg):
    outer, oh, ow, inner = best.shape
    for a in range(outer):
        for r in range(oh):
            for q in range(ow):
                top = best[a, r, q]
                which = arg[a, r, q]
                first = x[a, r * kh, q * kw]
                for n in range(inner):
                    top[n] = first[n]
                    which[n] = 0
                for i in range(kh):
                    for j in range(kw):
                        if i + j == 0:
                            continue
                        value = x[a, r * kh + i, q * kw + j]
                        k = i * kw + j
                        for n in range(inner):
                            v = value[n]
                            larger = v > top[n] or v != v  # a NaN wins, the last one, as in PyTorch
                            top[n] = v if larger else top[n]
                            which[n] = k if larger else which[n]


@numba.njit(cache=True, nogil=True)
def _max_pool_tiles_backward(grad, arg, kh, kw, out):
    outer, oh, ow, inner = grad.shape
    for a in range(outer):
        for r in range(oh):
            for q in range(ow):
                g = grad[a, r, q]
                which = arg[a, r, q]
                for i in range(kh):
                    for j in range(kw):
                        dst = out[a, r * kh + i, q * kw + j]
                        k = i * kw + j
                        for n in range(inner):
                            dst[n] = g[n] if which[n] == k else 0


def max_pool_tiles(x, kernel):
    """Max over the (kh, kw) tiles of an (A, H, W, I) array (I: the axes after W in memory, the
    batch when it comes from Conv2d): the (A, H/kh, W/kw, I) maxima and, as uint8, the row-major
    index in its tile of the first maximum, or of the last NaN when the tile has one (PyTorch's rule)."""
    a, h, w, inner = x.shape
    kh, kw = kernel
    best = np.empty((a, h // kh, w // kw, inner), dtype=x.dtype)
    arg = np.empty(best.shape, dtype=np.uint8)
    x = np.ascontiguousarray(x)
    threads.run(lambda s, e: _max_pool_tiles(x[s:e], kh, kw, best[s:e], arg[s:e]), threads.spans(a, x[0].size))
    return best, arg


def max_pool_tiles_backward(grad, arg, kernel):
    """Each tile's gradient to its first maximum, zeros elsewhere: an (A, H, W, I) array."""
    a, oh, ow, inner = grad.shape
    kh, kw = kernel
    out = np.empty((a, oh * kh, ow * kw, inner), dtype=grad.dtype)
    grad = np.ascontiguousarray(grad)
    threads.run(lambda s, e: _max_pool_tiles_backward(grad[s:e], arg[s:e], kh, kw, out[s:e]), threads.spans(a, out[0].size))
    return out


# Direct convolution for layers with few output channels (ops.conv.DirectWindows): each output
# row of one channel is a run of OW*N values in the batch-last layout, and each kernel tap adds a
# weight times a run of the padded input, so the whole product is axpys and dot products over
# contiguous runs, with no window matrix. The forward adds up to three taps of a kernel row per pass
# over the output run (fused multiply-adds allowed), which reads and writes the run a third as often
# as one tap per pass (bench/NOTES.md).


@numba.njit(cache=True, nogil=True, fastmath={"contract"})
def _direct_conv(image, weight, bias, out, mask, rectify):
    outputs, rows, cols, n_images = out.shape
    channels, kh, kw = weight.shape[1:]
    width = image.shape[2]
    run = cols * n_images
    for o in range(outputs):
        for r in range(rows):
            acc = out[o, r].reshape(run)
            b = bias[o]
            for t in range(run):
                acc[t] = b
            for c in range(channels):
                for i in range(kh):
                    line = image[c, r + i].reshape(width * n_images)
                    j = 0
                    while j + 3 <= kw:  # three taps of a kernel row per pass over the output run
                        w0, w1, w2 = weight[o, c, i, j], weight[o, c, i, j + 1], weight[o, c, i, j + 2]
                        s0 = line[j * n_images:j * n_images + run]
                        s1 = line[(j + 1) * n_images:(j + 1) * n_images + run]
                        s2 = line[(j + 2) * n_images:(j + 2) * n_images + run]
                        for t in range(run):
                            acc[t] += w0 * s0[t] + w1 * s1[t] + w2 * s2[t]
                        j += 3
                    if j + 2 <= kw:
                        w0, w1 = weight[o, c, i, j], weight[o, c, i, j + 1]
                        s0 = line[j * n_images:j * n_images + run]
                        s1 = line[(j + 1) * n_images:(j + 1) * n_images + run]
                        for t in range(run):
                            acc[t] += w0 * s0[t] + w1 * s1[t]
                        j += 2
                    if j < kw:
                        w0 = weight[o, c, i, j]
                        s0 = line[j * n_images:j * n_images + run]
                        for t in range(run):
                            acc[t] += w0 * s0[t]
            if rectify:  # a following ReLU, while the run is in cache
                numba_elementwise.rectify(acc, mask[o, r].reshape(run))


def direct_conv(image, weight, bias, output_size, relu=False):
    """The stride-1 undilated convolution of a C-contiguous padded (C, Hp, Wp, N) image with an
    (O, C, KH, KW) weight, plus ``bias`` (O values): the (O, OH, OW, N) output; with ``relu``,
    ``(max(output, 0), uint8 mask of the kept values)``, each output row rectified while in cache."""
    out = np.empty((weight.shape[0], *output_size, image.shape[-1]), dtype=image.dtype)
    mask = np.empty(out.shape, dtype=np.uint8) if relu else numba_elementwise.unused_mask(4)
    weight = np.ascontiguousarray(weight)
    threads.run(lambda s, e: _direct_conv(image, weight[s:e], bias[s:e], out[s:e], mask[s:e] if relu else mask, relu),
                threads.spans(out.shape[0], out[0].size * weight[0].size))
    return (out, mask) if relu else out


@numba.njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _direct_weight_gradient(image, grad, out, zero):
    outputs, rows, cols, n_images = grad.shape
    channels, kh, kw = out.shape[1:]
    width = image.shape[2]
    run = cols * n_images
    for o in range(outputs):
        total = np.zeros((channels, kh, kw))
        for r in range(rows):
            g = grad[o, r].reshape(run)
            for c in range(channels):
                for i in range(kh):
                    line = image[c, r + i].reshape(width * n_images)
                    for j in range(kw):
                        src = line[j * n_images:j * n_images + run]
                        s = zero  # the run in the gradient's dtype (vector lanes), run totals in float64
                        for t in range(run):
                            s += g[t] * src[t]
                        total[c, i, j] += s
        for c in range(channels):
            for i in range(kh):
                for j in range(kw):
                    out[o, c, i, j] = total[c, i, j]


def direct_weight_gradient(image, grad, kernel):
    """The (O, C, KH, KW) weight gradient of :func:`direct_conv` for the C-contiguous (O, OH, OW, N)
    output gradient: per output row, a dot product of it with each tap's run of the image, summed in
    the gradient's dtype (reassociated into vector lanes: float64 sums of float32 products
    vectorise poorly; bench/NOTES.md), the rows' sums added in float64."""
    out = np.empty((grad.shape[0], image.shape[0], *kernel), dtype=grad.dtype)
    zero = grad.dtype.type(0)
    threads.run(lambda s, e: _direct_weight_gradient(image, grad[s:e], out[s:e], zero), threads.spans(grad.shape[0], grad[0].size * out[0].size))
    return out

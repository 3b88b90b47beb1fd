"""Window loops for NumPy compiled by Numba: im2col, col2im, and the max pool over tiling windows.
im2col: one pass instead of a NumPy call per kernel offset, which Conv2d's pieces of a few output
rows could not afford (and faster on a whole LeNet step too). col2im: the portable version adds
one strided slice per kernel offset, reading and writing the whole image each time; this loop
makes one pass over the window buffer while one channel of the image stays in cache. Max pool:
one pass over the input instead of a compare, a maximum and a mask per window element.
Single-threaded on purpose: waking a thread pool per call cost more than it saved, and spinning
OpenMP workers starved OpenBLAS's threads. The measurements are in ``bench/NOTES.md``."""

import numba
import numpy as np


@numba.njit(cache=True)
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
    _im2col_rows(image, out, first, *stride, *dilation)
    return out


@numba.njit(cache=True)
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
    _col2im(np.ascontiguousarray(blocks), image, *stride, *dilation)
    return image


@numba.njit(cache=True)
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


@numba.njit(cache=True)
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
    _max_pool_tiles(np.ascontiguousarray(x), kh, kw, best, arg)
    return best, arg


def max_pool_tiles_backward(grad, arg, kernel):
    """Each tile's gradient to its first maximum, zeros elsewhere: an (A, H, W, I) array."""
    a, oh, ow, inner = grad.shape
    kh, kw = kernel
    out = np.empty((a, oh * kh, ow * kw, inner), dtype=grad.dtype)
    _max_pool_tiles_backward(np.ascontiguousarray(grad), arg, kh, kw, out)
    return out

"""Winograd F(2x2, 3x3) tile transforms for NumPy compiled by Numba: the four passes around the
sixteen GEMMs of ``xpnn.ops.winograd`` (input tiles, output tiles, and their two transposes for
the backward pass), over Conv2d's batch-last (C, H, W, N) images, a range of tile rows at a time.

Each loop gathers one tile's sixteen length-N vectors into a small scratch buffer, transforms
them there and writes the results out: with the inputs, the outputs and the arithmetic in one
loop body LLVM could not vectorise the batch axis (the stores may alias the loads) and ran 12
times slower. Single-threaded, as ``numba_windows`` is, for the same reason. The arithmetic is
the portable version's, term for term (``xpnn.ops.winograd``); the measurements are in
``bench/NOTES.md``."""

import numba
import numpy as np


@numba.njit(cache=True)
def _input_tiles(image, tiles, first):
    channels, rows, cols, n_images = tiles.shape[1:]
    d = np.empty((16, n_images), dtype=image.dtype)
    t = np.empty((16, n_images), dtype=image.dtype)
    for c in range(channels):
        for r in range(rows):
            for q in range(cols):
                for i in range(4):
                    for j in range(4):
                        src = image[c, 2 * (first + r) + i, 2 * q + j]
                        dst = d[4 * i + j]
                        for n in range(n_images):
                            dst[n] = src[n]
                for j in range(4):  # B^T d: rows
                    for n in range(n_images):
                        t[j, n] = d[j, n] - d[8 + j, n]
                        t[4 + j, n] = d[4 + j, n] + d[8 + j, n]
                        t[8 + j, n] = d[8 + j, n] - d[4 + j, n]
                        t[12 + j, n] = d[4 + j, n] - d[12 + j, n]
                for i in range(4):  # (B^T d) B: columns
                    v0 = tiles[4 * i, c, r, q]
                    v1 = tiles[4 * i + 1, c, r, q]
                    v2 = tiles[4 * i + 2, c, r, q]
                    v3 = tiles[4 * i + 3, c, r, q]
                    for n in range(n_images):
                        v0[n] = t[4 * i, n] - t[4 * i + 2, n]
                        v1[n] = t[4 * i + 1, n] + t[4 * i + 2, n]
                        v2[n] = t[4 * i + 2, n] - t[4 * i + 1, n]
                        v3[n] = t[4 * i + 1, n] - t[4 * i + 3, n]


def input_tiles(image, tile_rows, tile_cols, out=None):
    """The (16, C, R, TW, N) transformed input tiles ``B^T d B`` of tile rows ``tile_rows`` =
    (first, stop), R of them, of a C-contiguous padded (C, Hp, Wp, N) image, Hp >= 2*stop + 2
    and Wp >= 2*TW + 2; written into the C-contiguous ``out`` when given."""
    first, stop = tile_rows
    tiles = np.empty((16, image.shape[0], stop - first, tile_cols, image.shape[-1]), dtype=image.dtype) if out is None else out
    _input_tiles(image, tiles, first)
    return tiles


@numba.njit(cache=True)
def _output_tiles(products, bias, out, first):
    channels, rows, cols, n_images = products.shape[1:]
    height, width = out.shape[1], out.shape[2]
    m = np.empty((16, n_images), dtype=products.dtype)
    s = np.empty((8, n_images), dtype=products.dtype)
    for o in range(channels):
        b = bias[o]
        for r in range(rows):
            for q in range(cols):
                for k in range(16):
                    src = products[k, o, r, q]
                    dst = m[k]
                    for n in range(n_images):
                        dst[n] = src[n]
                for j in range(4):  # A^T m: rows
                    for n in range(n_images):
                        s[j, n] = m[j, n] + m[4 + j, n] + m[8 + j, n]
                        s[4 + j, n] = m[4 + j, n] - m[8 + j, n] - m[12 + j, n]
                for a in range(2):  # (A^T m) A: columns, plus the bias
                    y = 2 * (first + r) + a
                    if y >= height:
                        continue
                    left = out[o, y, 2 * q]
                    for n in range(n_images):
                        left[n] = s[4 * a, n] + s[4 * a + 1, n] + s[4 * a + 2, n] + b
                    if 2 * q + 1 < width:
                        right = out[o, y, 2 * q + 1]
                        for n in range(n_images):
                            right[n] = s[4 * a + 1, n] - s[4 * a + 2, n] - s[4 * a + 3, n] + b


def output_tiles(products, bias, out, first):
    """Write ``A^T m A + bias`` of C-contiguous (16, O, R, TW, N) tile products (``bias``: O
    values), tile rows first..first+R, into the C-contiguous (O, OH, OW, N) image ``out``; an
    odd OH or OW drops the last tile row or column's second half."""
    _output_tiles(products, bias, out, first)


@numba.njit(cache=True)
def _output_tiles_transposed(grad, tiles, first):
    channels, rows, cols, n_images = tiles.shape[1:]
    height, width = grad.shape[1], grad.shape[2]
    g = np.zeros((4, n_images), dtype=grad.dtype)
    s = np.empty((8, n_images), dtype=grad.dtype)
    for o in range(channels):
        for r in range(rows):
            for q in range(cols):
                for a in range(2):
                    for b in range(2):
                        y, x = 2 * (first + r) + a, 2 * q + b
                        dst = g[2 * a + b]
                        if y < height and x < width:
                            src = grad[o, y, x]
                            for n in range(n_images):
                                dst[n] = src[n]
                        else:
                            for n in range(n_images):
                                dst[n] = 0
                for b in range(2):  # A g: rows
                    for n in range(n_images):
                        s[b, n] = g[b, n]
                        s[2 + b, n] = g[b, n] + g[2 + b, n]
                        s[4 + b, n] = g[b, n] - g[2 + b, n]
                        s[6 + b, n] = -g[2 + b, n]
                for i in range(4):  # (A g) A^T: columns
                    m0 = tiles[4 * i, o, r, q]
                    m1 = tiles[4 * i + 1, o, r, q]
                    m2 = tiles[4 * i + 2, o, r, q]
                    m3 = tiles[4 * i + 3, o, r, q]
                    for n in range(n_images):
                        m0[n] = s[2 * i, n]
                        m1[n] = s[2 * i, n] + s[2 * i + 1, n]
                        m2[n] = s[2 * i, n] - s[2 * i + 1, n]
                        m3[n] = -s[2 * i + 1, n]


def output_tiles_transposed(grad, tile_rows, tile_cols, out=None):
    """The transpose of :func:`output_tiles` (bias aside): the (16, O, R, TW, N) tiles
    ``A g A^T`` of tile rows ``tile_rows`` = (first, stop) of a C-contiguous (O, OH, OW, N)
    gradient, zeros beyond an odd edge; written into the C-contiguous ``out`` when given."""
    first, stop = tile_rows
    tiles = np.empty((16, grad.shape[0], stop - first, tile_cols, grad.shape[-1]), dtype=grad.dtype) if out is None else out
    _output_tiles_transposed(grad, tiles, first)
    return tiles


@numba.njit(cache=True)
def _input_tiles_transposed(tiles, image, first):
    channels, rows, cols, n_images = tiles.shape[1:]
    v = np.empty((16, n_images), dtype=tiles.dtype)
    t = np.empty((16, n_images), dtype=tiles.dtype)
    for c in range(channels):
        for r in range(rows):
            for q in range(cols):
                for k in range(16):
                    src = tiles[k, c, r, q]
                    dst = v[k]
                    for n in range(n_images):
                        dst[n] = src[n]
                for j in range(4):  # B v: rows
                    for n in range(n_images):
                        t[j, n] = v[j, n]
                        t[4 + j, n] = v[4 + j, n] - v[8 + j, n] + v[12 + j, n]
                        t[8 + j, n] = v[4 + j, n] + v[8 + j, n] - v[j, n]
                        t[12 + j, n] = -v[12 + j, n]
                for i in range(4):  # (B v) B^T: columns, added into the overlapping tiles
                    p0 = image[c, 2 * (first + r) + i, 2 * q]
                    p1 = image[c, 2 * (first + r) + i, 2 * q + 1]
                    p2 = image[c, 2 * (first + r) + i, 2 * q + 2]
                    p3 = image[c, 2 * (first + r) + i, 2 * q + 3]
                    for n in range(n_images):
                        p0[n] += t[4 * i, n]
                        p1[n] += t[4 * i + 1, n] - t[4 * i + 2, n] + t[4 * i + 3, n]
                        p2[n] += t[4 * i + 1, n] + t[4 * i + 2, n] - t[4 * i, n]
                        p3[n] += -t[4 * i + 3, n]


def input_tiles_transposed(tiles, image, first):
    """The transpose of :func:`input_tiles`: add the gradient of C-contiguous (16, C, R, TW, N)
    tiles, tile rows first..first+R, into the C-contiguous padded (C, Hp, Wp, N) ``image``, each
    tile's ``B v B^T`` where it lies (tiles overlap by two rows and columns)."""
    _input_tiles_transposed(tiles, image, first)

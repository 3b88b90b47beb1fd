"""Winograd F(4x4, 3x3) tile transforms for NumPy compiled by Numba: the four passes around the
36 GEMMs of ``xpnn.ops.winograd`` for 6x6 tiles (input tiles, output tiles, and their two
transposes for the backward pass), over Conv2d's batch-last (C, H, W, N) images, a block of tile
rows and columns at a time.

Laid out as ``numba_winograd``'s F(2x2, 3x3) loops are: one tile's 36 length-N vectors through a
scratch buffer, rows first, then columns. Each one-dimensional transform (B^T, A^T, A, B applied
to six or four vectors) is one helper that both passes call, inlined by Numba (``inline=
"always"``; called as separate functions they ran up to 1.5x slower). The matrices of Lavin and
Gray (``ops.winograd.TRANSFORMS[4]``) are written out term by term, with their shared sums and
differences computed once (for B^T: ``d4 - 4 d2 +- (d3 - 4 d1)`` and ``d4 - d2 +- 2 (d3 - d1)``);
the portable twins multiply by the matrices' entries, so the two agree to round-off, not bit for
bit. The integer coefficients are passed in the arrays' dtype, so float32 stays float32 (a Python
number would promote the arithmetic to float64)."""

import numba
import numpy as np

from . import numba_elementwise, numba_winograd


def _coefficients(dtype):
    """2, 4, 5 and 8 in ``dtype``."""
    return np.asarray((2, 4, 5, 8), dtype=dtype)


@numba.njit(cache=True, nogil=True, inline="always")
def _input_rows(d0, d1, d2, d3, d4, d5, t0, t1, t2, t3, t4, t5, k):
    """t = B^T d, for six vectors of d: Lavin and Gray's rows with their shared terms."""
    two, four, five = k[0], k[1], k[2]
    for n in range(t0.shape[0]):
        a = d4[n] - four * d2[n]
        b = d3[n] - four * d1[n]
        e = d4[n] - d2[n]
        f = two * (d3[n] - d1[n])
        t0[n] = four * d0[n] - five * d2[n] + d4[n]
        t1[n] = a + b
        t2[n] = a - b
        t3[n] = e + f
        t4[n] = e - f
        t5[n] = four * d1[n] - five * d3[n] + d5[n]


@numba.njit(cache=True, nogil=True, inline="always")
def _output_rows(m0, m1, m2, m3, m4, m5, s0, s1, s2, s3, bias, k):
    """s = A^T m + bias, for six vectors of m."""
    two, four, eight = k[0], k[1], k[3]
    for n in range(s0.shape[0]):
        p = m1[n] + m2[n]
        d = m1[n] - m2[n]
        u = m3[n] + m4[n]
        v = m3[n] - m4[n]
        s0[n] = m0[n] + p + u + bias
        s1[n] = d + two * v + bias
        s2[n] = p + four * u + bias
        s3[n] = d + eight * v + m5[n] + bias


@numba.njit(cache=True, nogil=True, inline="always")
def _output_rows_transposed(g0, g1, g2, g3, s0, s1, s2, s3, s4, s5, k):
    """s = A g, for four vectors of g."""
    two, four, eight = k[0], k[1], k[3]
    for n in range(s0.shape[0]):
        even = g0[n] + g2[n]
        odd = g1[n] + g3[n]
        even4 = g0[n] + four * g2[n]
        odd4 = two * g1[n] + eight * g3[n]
        s0[n] = g0[n]
        s1[n] = even + odd
        s2[n] = even - odd
        s3[n] = even4 + odd4
        s4[n] = even4 - odd4
        s5[n] = g3[n]


@numba.njit(cache=True, nogil=True, inline="always")
def _input_rows_transposed(v0, v1, v2, v3, v4, v5, t0, t1, t2, t3, t4, t5, k):
    """t = B v, for six vectors of v."""
    two, four, five = k[0], k[1], k[2]
    for n in range(t0.shape[0]):
        t0[n] = four * v0[n]
        t1[n] = four * (v2[n] - v1[n]) + two * (v4[n] - v3[n]) + four * v5[n]
        t2[n] = -five * v0[n] - four * (v1[n] + v2[n]) - (v3[n] + v4[n])
        t3[n] = (v1[n] - v2[n]) + two * (v3[n] - v4[n]) - five * v5[n]
        t4[n] = v0[n] + (v1[n] + v2[n]) + (v3[n] + v4[n])
        t5[n] = v5[n]


@numba.njit(cache=True, nogil=True)
def _input_tiles(image, tiles, first, left, k):
    channels, rows, cols, n_images = tiles.shape[1:]
    t = np.empty((36, n_images), dtype=image.dtype)
    for c in range(channels):
        for r in range(rows):
            y = 4 * (first + r)
            for q in range(cols):
                x = 4 * (left + q)
                for j in range(6):  # B^T d, column j of the tile read straight from the image
                    _input_rows(image[c, y, x + j], image[c, y + 1, x + j], image[c, y + 2, x + j], image[c, y + 3, x + j],
                                image[c, y + 4, x + j], image[c, y + 5, x + j], t[j], t[6 + j], t[12 + j], t[18 + j], t[24 + j],
                                t[30 + j], k)
                for i in range(6):  # (B^T d) B: columns
                    _input_rows(t[6 * i], t[6 * i + 1], t[6 * i + 2], t[6 * i + 3], t[6 * i + 4], t[6 * i + 5],
                                tiles[6 * i, c, r, q], tiles[6 * i + 1, c, r, q], tiles[6 * i + 2, c, r, q],
                                tiles[6 * i + 3, c, r, q], tiles[6 * i + 4, c, r, q], tiles[6 * i + 5, c, r, q], k)


def input_tiles(image, tile_rows, tile_cols, out=None):
    """The (36, C, R, TW, N) transformed input tiles ``B^T d B`` of tile rows ``tile_rows`` =
    (first, stop), R of them, and tile columns ``tile_cols`` = (left, right), TW of them, of a
    C-contiguous padded (C, Hp, Wp, N) image, Hp >= 4*stop + 2 and Wp >= 4*right + 2; written
    into the C-contiguous ``out`` when given."""
    (first, stop), (left, right) = tile_rows, tile_cols
    tiles = np.empty((36, image.shape[0], stop - first, right - left, image.shape[-1]), dtype=image.dtype) if out is None else out
    _input_tiles(image, tiles, first, left, _coefficients(image.dtype))
    return tiles


@numba.njit(cache=True, nogil=True)
def _output_tiles(products, bias, out, first, left, mask, rectify, k):
    channels, rows, cols, n_images = products.shape[1:]
    height, width = out.shape[1], out.shape[2]
    zero = k[0] - k[0]
    s = np.empty((24, n_images), dtype=products.dtype)
    edge = np.empty((4, n_images), dtype=products.dtype)
    for o in range(channels):
        for r in range(rows):
            for q in range(cols):
                for j in range(6):  # A^T m: rows, column j of the tile read straight from the products
                    _output_rows(products[j, o, r, q], products[6 + j, o, r, q], products[12 + j, o, r, q],
                                 products[18 + j, o, r, q], products[24 + j, o, r, q], products[30 + j, o, r, q],
                                 s[j], s[6 + j], s[12 + j], s[18 + j], zero, k)
                for a in range(4):  # (A^T m) A: columns, plus the bias; cropped at the image's edge
                    y, x = 4 * (first + r) + a, 4 * (left + q)
                    if y >= height:
                        continue
                    w = s[6 * a:6 * a + 6]
                    if x + 3 < width:
                        _output_rows(w[0], w[1], w[2], w[3], w[4], w[5], out[o, y, x], out[o, y, x + 1], out[o, y, x + 2],
                                     out[o, y, x + 3], bias[o], k)
                        written = 4
                    else:
                        _output_rows(w[0], w[1], w[2], w[3], w[4], w[5], edge[0], edge[1], edge[2], edge[3], bias[o], k)
                        written = width - x
                        for b in range(written):
                            out[o, y, x + b, :] = edge[b]
                    if rectify:  # a following ReLU, while the values are in cache
                        for b in range(written):
                            numba_elementwise.rectify(out[o, y, x + b], mask[o, y, x + b])


def output_tiles(products, bias, out, origin, mask=None):
    """Write ``A^T m A + bias`` of C-contiguous (36, O, R, TW, N) tile products (``bias``: O
    values) whose first tile is tile (row, column) ``origin`` into the C-contiguous (O, OH, OW, N)
    image ``out``; an output height or width that is not a multiple of 4 drops the rest of the
    last tile row or column. With a uint8 ``mask`` laid out like ``out``, each value is rectified
    as written (a following ReLU) and marked there."""
    _output_tiles(products, bias, out, *origin, numba_elementwise.unused_mask(4) if mask is None else mask, mask is not None,
                  _coefficients(products.dtype))


@numba.njit(cache=True, nogil=True)
def _output_tiles_transposed(grad, tiles, first, left, k):
    channels, rows, cols, n_images = tiles.shape[1:]
    height, width = grad.shape[1], grad.shape[2]
    g = np.zeros((16, n_images), dtype=grad.dtype)
    s = np.empty((24, n_images), dtype=grad.dtype)
    for o in range(channels):
        for r in range(rows):
            y = 4 * (first + r)
            for q in range(cols):
                x = 4 * (left + q)
                if y + 3 < height and x + 3 < width:
                    for b in range(4):  # A g: rows, column b of the tile read straight from the gradient
                        _output_rows_transposed(grad[o, y, x + b], grad[o, y + 1, x + b], grad[o, y + 2, x + b],
                                                grad[o, y + 3, x + b], s[b], s[4 + b], s[8 + b], s[12 + b], s[16 + b],
                                                s[20 + b], k)
                else:  # a tile over the edge: its gradient copied, zeros beyond
                    g[:] = 0
                    for a in range(min(4, height - y)):
                        for b in range(min(4, width - x)):
                            g[4 * a + b] = grad[o, y + a, x + b]
                    for b in range(4):
                        _output_rows_transposed(g[b], g[4 + b], g[8 + b], g[12 + b], s[b], s[4 + b], s[8 + b], s[12 + b],
                                                s[16 + b], s[20 + b], k)
                for i in range(6):  # (A g) A^T: columns
                    _output_rows_transposed(s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3], tiles[6 * i, o, r, q],
                                            tiles[6 * i + 1, o, r, q], tiles[6 * i + 2, o, r, q], tiles[6 * i + 3, o, r, q],
                                            tiles[6 * i + 4, o, r, q], tiles[6 * i + 5, o, r, q], k)


def output_tiles_transposed(grad, tile_rows, tile_cols, out=None):
    """The transpose of :func:`output_tiles` (bias aside): the (36, O, R, TW, N) tiles
    ``A g A^T`` of tile rows ``tile_rows`` = (first, stop) and columns ``tile_cols`` = (left,
    right) of a C-contiguous (O, OH, OW, N) gradient, zeros beyond its edge; written into the
    C-contiguous ``out`` when given."""
    (first, stop), (left, right) = tile_rows, tile_cols
    tiles = np.empty((36, grad.shape[0], stop - first, right - left, grad.shape[-1]), dtype=grad.dtype) if out is None else out
    _output_tiles_transposed(grad, tiles, first, left, _coefficients(grad.dtype))
    return tiles


@numba.njit(cache=True, nogil=True)
def _input_tiles_transposed(tiles, image, first, left, ph, pw, k):
    channels, rows, cols, n_images = tiles.shape[1:]
    height = image.shape[1]
    t = np.empty((36, n_images), dtype=tiles.dtype)
    u = np.empty((6, n_images), dtype=tiles.dtype)
    for c in range(channels):
        for r in range(rows):
            for q in range(cols):
                for j in range(6):  # B v: rows, column j of the tile read straight from the tiles
                    _input_rows_transposed(tiles[j, c, r, q], tiles[6 + j, c, r, q], tiles[12 + j, c, r, q],
                                           tiles[18 + j, c, r, q], tiles[24 + j, c, r, q], tiles[30 + j, c, r, q],
                                           t[j], t[6 + j], t[12 + j], t[18 + j], t[24 + j], t[30 + j], k)
                for i in range(6):  # (B v) B^T: columns, then added where the tile lies, padding left out
                    y = 4 * (first + r) + i - ph
                    if y < 0 or y >= height:
                        continue
                    _input_rows_transposed(t[6 * i], t[6 * i + 1], t[6 * i + 2], t[6 * i + 3], t[6 * i + 4], t[6 * i + 5],
                                           u[0], u[1], u[2], u[3], u[4], u[5], k)
                    numba_winograd.add_tile_row(image, c, y, 4 * (left + q) - pw, u)


def input_tiles_transposed(tiles, image, origin, padding):
    """The transpose of :func:`input_tiles`: add the gradient of C-contiguous (36, C, R, TW, N)
    tiles whose first tile is tile (row, column) ``origin`` of the image padded by ``padding`` =
    (ph, pw) into the C-contiguous unpadded (C, H, W, N) ``image``: each tile's ``B v B^T`` where
    it lies (tiles overlap by two rows and columns), what falls on the padding left out."""
    _input_tiles_transposed(tiles, image, *origin, *padding, _coefficients(tiles.dtype))

"""Winograd F(2x2, 3x3) tile transforms for NumPy compiled by Numba: the four passes around the
sixteen GEMMs of ``xpnn.ops.winograd`` (input tiles, output tiles, and their two transposes for
the backward pass), over Conv2d's batch-last (C, H, W, N) images, a block of tile rows and
columns at a time.

Each loop works on one tile's sixteen length-N vectors through a small scratch buffer: with the
16 loads, the 16 stores and the arithmetic in one loop body LLVM could not vectorise the batch
axis (the stores may alias the loads) and ran 12 times slower. The input transform reads four
image vectors and writes four scratch vectors per loop, 1.5x faster than gathering all sixteen
first. Single-threaded, as ``numba_windows`` is, for the same reason. The arithmetic is
the portable version's, term for term (``xpnn.ops.winograd``); the measurements are in
``bench/NOTES.md``."""

import numba
import numpy as np

from . import numba_elementwise


@numba.njit(cache=True, nogil=True)
def _input_tiles(image, tiles, first, left):
    channels, rows, cols, n_images = tiles.shape[1:]
    t = np.empty((16, n_images), dtype=image.dtype)
    for c in range(channels):
        for r in range(rows):
            y = 2 * (first + r)
            for q in range(cols):
                x = 2 * (left + q)
                for j in range(4):  # B^T d, column j of the tile read straight from the image
                    d0 = image[c, y, x + j]
                    d1 = image[c, y + 1, x + j]
                    d2 = image[c, y + 2, x + j]
                    d3 = image[c, y + 3, x + j]
                    t0 = t[j]
                    t1 = t[4 + j]
                    t2 = t[8 + j]
                    t3 = t[12 + j]
                    for n in range(n_images):
                        t0[n] = d0[n] - d2[n]
                        t1[n] = d1[n] + d2[n]
                        t2[n] = d2[n] - d1[n]
                        t3[n] = d1[n] - d3[n]
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
    (first, stop), R of them, and tile columns ``tile_cols`` = (left, right), TW of them, of a
    C-contiguous padded (C, Hp, Wp, N) image, Hp >= 2*stop + 2 and Wp >= 2*right + 2; written
    into the C-contiguous ``out`` when given."""
    (first, stop), (left, right) = tile_rows, tile_cols
    tiles = np.empty((16, image.shape[0], stop - first, right - left, image.shape[-1]), dtype=image.dtype) if out is None else out
    _input_tiles(image, tiles, first, left)
    return tiles


@numba.njit(cache=True, nogil=True)
def _output_tiles(products, bias, out, first, left, mask, rectify):
    channels, rows, cols, n_images = products.shape[1:]
    height, width = out.shape[1], out.shape[2]
    s = np.empty((8, n_images), dtype=products.dtype)
    for o in range(channels):
        b = bias[o]
        for r in range(rows):
            for q in range(cols):
                for j in range(4):  # A^T m: rows, column j of the tile read straight from the products
                    m0 = products[j, o, r, q]
                    m1 = products[4 + j, o, r, q]
                    m2 = products[8 + j, o, r, q]
                    m3 = products[12 + j, o, r, q]
                    s0 = s[j]
                    s1 = s[4 + j]
                    for n in range(n_images):
                        s0[n] = m0[n] + m1[n] + m2[n]
                        s1[n] = m1[n] - m2[n] - m3[n]
                for a in range(2):  # (A^T m) A: columns, plus the bias
                    y = 2 * (first + r) + a
                    if y >= height:
                        continue
                    x = 2 * (left + q)
                    even = out[o, y, x]
                    for n in range(n_images):
                        even[n] = s[4 * a, n] + s[4 * a + 1, n] + s[4 * a + 2, n] + b
                    if rectify:
                        numba_elementwise.rectify(even, mask[o, y, x])
                    if x + 1 < width:
                        odd = out[o, y, x + 1]
                        for n in range(n_images):
                            odd[n] = s[4 * a + 1, n] - s[4 * a + 2, n] - s[4 * a + 3, n] + b
                        if rectify:
                            numba_elementwise.rectify(odd, mask[o, y, x + 1])


def output_tiles(products, bias, out, origin, mask=None):
    """Write ``A^T m A + bias`` of C-contiguous (16, O, R, TW, N) tile products (``bias``: O
    values) whose first tile is tile (row, column) ``origin`` into the C-contiguous (O, OH, OW, N)
    image ``out``; an odd OH or OW drops the last tile row or column's second half. With a uint8
    ``mask`` laid out like ``out``, each value is rectified as written (a following ReLU) and
    marked there."""
    _output_tiles(products, bias, out, *origin, numba_elementwise.unused_mask(4) if mask is None else mask, mask is not None)


@numba.njit(cache=True, nogil=True)
def _output_tiles_transposed(grad, tiles, first, left):
    channels, rows, cols, n_images = tiles.shape[1:]
    height, width = grad.shape[1], grad.shape[2]
    g = np.zeros((4, n_images), dtype=grad.dtype)
    s = np.empty((8, n_images), dtype=grad.dtype)
    for o in range(channels):
        for r in range(rows):
            for q in range(cols):
                for a in range(2):
                    for b in range(2):
                        y, x = 2 * (first + r) + a, 2 * (left + q) + b
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
    ``A g A^T`` of tile rows ``tile_rows`` = (first, stop) and columns ``tile_cols`` = (left,
    right) of a C-contiguous (O, OH, OW, N) gradient, zeros beyond an odd edge; written into the
    C-contiguous ``out`` when given."""
    (first, stop), (left, right) = tile_rows, tile_cols
    tiles = np.empty((16, grad.shape[0], stop - first, right - left, grad.shape[-1]), dtype=grad.dtype) if out is None else out
    _output_tiles_transposed(grad, tiles, first, left)
    return tiles


@numba.njit(cache=True, nogil=True, inline="always")
def add_tile_row(image, c, y, x, parts):
    """Add one row of a tile's input gradient, ``parts`` (a vector per tile column), into
    channel ``c``'s image row ``y`` from column ``x`` on, the columns outside the image (its
    padding) left out; both tiles' transposed input transforms end so. Inlined into another
    module's loop too, whose Numba cache does not see a change here: after editing it, delete
    ``xpnn/kernels/__pycache__``."""
    size, n_images = parts.shape
    width = image.shape[2]
    for j in range(size):
        if x + j < 0 or x + j >= width:
            continue
        pixel = image[c, y, x + j]
        part = parts[j]
        for n in range(n_images):
            pixel[n] += part[n]


@numba.njit(cache=True, nogil=True)
def _input_tiles_transposed(tiles, image, first, left, ph, pw):
    channels, rows, cols, n_images = tiles.shape[1:]
    height = image.shape[1]
    t = np.empty((16, n_images), dtype=tiles.dtype)
    u = np.empty((4, n_images), dtype=tiles.dtype)
    for c in range(channels):
        for r in range(rows):
            for q in range(cols):
                for j in range(4):  # B v: rows, column j of the tile read straight from the tiles
                    v0 = tiles[j, c, r, q]
                    v1 = tiles[4 + j, c, r, q]
                    v2 = tiles[8 + j, c, r, q]
                    v3 = tiles[12 + j, c, r, q]
                    t0 = t[j]
                    t1 = t[4 + j]
                    t2 = t[8 + j]
                    t3 = t[12 + j]
                    for n in range(n_images):
                        t0[n] = v0[n]
                        t1[n] = v1[n] - v2[n] + v3[n]
                        t2[n] = v1[n] + v2[n] - v0[n]
                        t3[n] = -v3[n]
                for i in range(4):  # (B v) B^T: columns, then added where the tile lies, padding left out
                    y = 2 * (first + r) + i - ph
                    if y < 0 or y >= height:
                        continue
                    for n in range(n_images):
                        u[0, n] = t[4 * i, n]
                        u[1, n] = t[4 * i + 1, n] - t[4 * i + 2, n] + t[4 * i + 3, n]
                        u[2, n] = t[4 * i + 1, n] + t[4 * i + 2, n] - t[4 * i, n]
                        u[3, n] = -t[4 * i + 3, n]
                    add_tile_row(image, c, y, 2 * (left + q) - pw, u)


def input_tiles_transposed(tiles, image, origin, padding):
    """The transpose of :func:`input_tiles`: add the gradient of C-contiguous (16, C, R, TW, N)
    tiles whose first tile is tile (row, column) ``origin`` of the image padded by ``padding`` =
    (ph, pw) into the C-contiguous unpadded (C, H, W, N) ``image``: each tile's ``B v B^T`` where
    it lies (tiles overlap by two rows and columns), what falls on the padding left out."""
    _input_tiles_transposed(tiles, image, *origin, *padding)

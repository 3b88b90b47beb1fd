"""Winograd convolution F(m x m, 3x3), m = 2 or 4: a 3x3, stride-1 convolution as (m+2)^2 GEMMs
over tiles, with 2.25 (m = 2) or 4 (m = 4) times fewer multiplications than im2col's one GEMM
(Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks", 2015).

Each m x m block of output pixels is computed from the (m+2) x (m+2) input tile around it:
``Y = A^T [(G w G^T) * (B^T d B)] A``, summed over input channels. The elementwise product summed
over channels is, for each of the (m+2)^2 tile positions, a GEMM of the (O, C) transformed weight
with the (C, tiles) transformed input. The backward pass is the transpose of the same steps: the
output gradient's tiles ``A g A^T`` times the input tiles give the weight gradient (then
``G^T . G``), times the weight the input tiles' gradient (then ``B . B^T``, added where tiles
overlap). F(4x4, 3x3) has fewer products and less transformed data per output pixel, but its
transforms take more additions per tile and its matrices' larger entries (up to 8, and G's 1/24)
cost float32 some accuracy (``bench/NOTES.md``).

:class:`WinogradWindows` has the interface of ``ops.conv``'s window matrices, so Conv2d (and
ConvTranspose2d's backward) use it unchanged; ``ops.conv.conv_windows`` chooses it and its m.
Door for the four tile transforms: the Numba loops (``xpnn.kernels.numba_winograd`` for m = 2,
``numba_winograd4`` for m = 4) for C-contiguous float32 or float64 NumPy arrays, else the portable
strided-slice versions below, which compute each value from :data:`TRANSFORMS`' matrices,
coefficient by coefficient. For m = 2 the Numba loops add the same terms in the same order (the
input transform's transpose adds overlapping tiles in another order); for m = 4 they share sums
between rows and agree to round-off. The matrices are the definition the tests check against."""

from typing import NamedTuple

import numpy as np

from .. import backend, threads
from . import layout
from .activation import rectify_portable
from .windows import padded_batch_last


class Transforms(NamedTuple):
    """The matrices of F(m x m, 3x3): B^T ((m+2) x (m+2), input), G ((m+2) x 3, weight) and A^T
    (m x (m+2), output)."""

    input: tuple
    weight: tuple
    output: tuple


# Lavin and Gray's matrices for tiles of m = 2 and m = 4 output pixels a side.
TRANSFORMS = {
    2: Transforms(
        input=((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1)),
        weight=((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0)),
        output=((1, 1, 1, 0), (0, 1, -1, -1)),
    ),
    4: Transforms(
        input=((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
               (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)),
        weight=((1 / 4, 0.0, 0.0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6), (1 / 24, 1 / 12, 1 / 6),
                (1 / 24, -1 / 12, 1 / 6), (0.0, 0.0, 1.0)),
        output=((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1)),
    ),
}


# The tiles are transformed, multiplied and transformed back a few tile rows at a time, the rows
# whose transformed tiles and products together take at most about this many bytes (at least one
# row): they then stay in cache between the transforms and the GEMMs (bench/winograd.py). Each of
# xpnn's threads works through chunks of its own (xpnn.threads); 2 MiB is this machine's L2 per core
# (bench/NOTES.md).
CHUNK_BYTES = 1 << 21


class WinogradWindows:
    """A 3x3, stride-1, undilated, ungrouped convolution's input for Winograd F(m x m, 3x3) (``m``
    = 2 or 4), kept as its zero-padded batch-last (C, Hp, Wp, N) image, Hp = m*TH + 2 for TH =
    ceil(OH/m) rows of tiles (W likewise). ``matmul``, ``weight_gradient``, ``input_gradient`` and ``gradients`` are the convolution's
    products. Each runs over chunks of tile rows (``CHUNK_BYTES``): it transforms a chunk's
    tiles, multiplies them and transforms the products back while they are in cache. The
    backward pass transforms the input tiles again rather than keep them from the forward: that
    costs less than writing out and reading back (m+2)^2/m^2 values per input pixel (4 for m = 2,
    2.25 for m = 4), and a layer keeps only its padded input."""

    def __init__(self, x, padding, output_size, m=2):
        if m not in TRANSFORMS:
            raise ValueError(f"Winograd tiles: expected m in {sorted(TRANSFORMS)}, got {m}")
        xp = backend.namespace_of(x)
        self.xp, self.m, self.positions = xp, m, (m + 2) ** 2
        self.rectifies, self.relu_mask = backend.fast_path(xp) == "numba", None  # see ops.conv._Windows
        self.x_shape, self.padding, self.output_size = tuple(x.shape), padding, output_size
        self.tile_grid = (-(-output_size[0] // m), -(-output_size[1] // m))
        self.padded_size = (m * self.tile_grid[0] + 2, m * self.tile_grid[1] + 2)
        self.image = padded_batch_last(x, padding, self.padded_size)

    def _chunks(self, outputs, span=None):
        """The chunks of the tile rows in ``span`` (default: all) for a layer with ``outputs``
        channels, as ((first row, stop), (first column, stop)) tile ranges: whole rows, as many
        as ``CHUNK_BYTES`` holds, at least one. (Blocks of a row's columns, for chunks that stay
        in this machine's L2, made the transforms faster and the products slower: the layers
        lost 5-12%, ``bench/NOTES.md``.)"""
        span = (0, self.tile_grid[0]) if span is None else span
        (n, c), cols = self.x_shape[:2], self.tile_grid[1]
        row_bytes = self.positions * (c + outputs) * cols * n * (self.xp.finfo(self.image.dtype).bits // 8)
        size = max(1, CHUNK_BYTES // max(row_bytes, 1))
        return [((first, min(span[1], first + size)), (0, cols)) for first in range(span[0], span[1], size)]

    def _thread_spans(self):
        """The tile rows as one contiguous range per xpnn thread (``xpnn.threads``) on NumPy."""
        parts = threads.get_num_threads() if backend.fast_path(self.xp) == "numba" else 1
        return threads.ranges(self.tile_grid[0], parts)

    def _flat(self, tiles):
        return self.xp.reshape(tiles, (self.positions, tiles.shape[1], -1))

    def _tiles(self, flat, chunk):
        (first, stop), (left, right) = chunk
        return self.xp.reshape(flat, (self.positions, flat.shape[1], stop - first, right - left, self.x_shape[0]))

    def _input_tiles(self, chunk, buffers):
        return self._flat(input_tiles(self.image, *chunk, buffers.take("input", self.x_shape[1], chunk), m=self.m))

    def _buffers(self, outputs, *spans):
        """The chunks of the tile rows of ``spans`` for a layer with ``outputs`` channels, and a
        :class:`_ChunkBuffers` for them."""
        chunks = [chunk for span in spans if span[1] > span[0] for chunk in self._chunks(outputs, span)]
        largest = max((stop - first) * (right - left) for (first, stop), (left, right) in chunks)
        return chunks, _ChunkBuffers(self.xp, self.image, self.positions, largest, self.x_shape[0])

    def _weight_tiles(self, weight):
        """The ((m+2)^2, O, C) transformed weight ``G w G^T`` of a (1, O, C*9) grouped weight."""
        xp = self.xp
        o = weight.shape[1]
        g = _transform_matrix(xp, TRANSFORMS[self.m].weight, weight)
        u = g @ xp.reshape(weight, (o, -1, 3, 3)) @ xp.matrix_transpose(g)
        return xp.reshape(xp.permute_dims(u, (2, 3, 0, 1)), (self.positions, o, -1))

    def matmul(self, weight, bias=None, relu=False):
        """The convolution of the kept input with a (1, O, C*9) weight, plus ``bias`` (O values)
        when given: (1, O, OH*OW*N), batch-last; with ``relu``, rectified as the output tiles
        are written, the (O, OH, OW, N) uint8 mask of the kept values in ``relu_mask``."""
        xp = self.xp
        u = self._weight_tiles(weight)
        o, device = u.shape[1], backend.device_of(u)
        out = xp.empty((o, *self.output_size, self.x_shape[0]), dtype=u.dtype, device=device)
        mask = xp.empty(out.shape, dtype=xp.uint8, device=device) if relu else None
        self.relu_mask = mask
        if bias is None:
            bias = xp.zeros((o,), dtype=u.dtype, device=device)

        def span_products(first, stop):  # each thread its own tile rows and buffers
            chunks, buffers = self._buffers(o, (first, stop))
            for chunk in chunks:
                products = _matmul(u, self._input_tiles(chunk, buffers), buffers.take("products", o, chunk, flat=True))
                output_tiles(self._tiles(products, chunk), bias, out, (chunk[0][0], chunk[1][0]), mask, m=self.m)

        threads.run(span_products, self._thread_spans())
        return xp.reshape(out, (1, o, -1))

    def weight_gradient(self, grad):
        """The (1, C*9, O) weight gradient alone (see :meth:`gradients`)."""
        return self._backward(None, grad, True, False)[0]

    def input_gradient(self, weight, grad):
        """The input gradient alone (see :meth:`gradients`)."""
        return self._backward(weight, grad, False, True)[1]

    def gradients(self, weight, grad, need_input):
        """For the (1, O, OH*OW*N) output gradient: the weight gradient as (1, C*9, O) (the
        gradient's tiles ``A g A^T`` times the input tiles, summed over chunks, then ``G^T . G``
        back to 3x3) and, when ``need_input``, the input gradient as a (C, H, W, N) batch-last
        image (the (1, O, C*9) weight's tiles times the gradient's, then ``B . B^T`` added where
        tiles overlap); else None. The gradient's tiles are transformed once for both."""
        return self._backward(weight, grad, True, need_input)

    def _backward(self, weight, grad, need_weight, need_input):
        """``(weight gradient or None, input gradient or None)``, each only when asked for. Each
        xpnn thread takes a range of tile rows. As tiles overlap by two image rows, a range's
        first tile row adds into rows that the range before it adds into too: every thread but
        the first adds its first row's input gradient into a zeroed band of its own, the m + 2
        image rows that row covers, and the bands are added into the image once the threads
        have finished, so no two threads ever add into the same rows."""
        xp = self.xp
        o, (n, c) = grad.shape[1], self.x_shape[:2]
        grad_image = xp.reshape(grad, (o, *self.output_size, n))
        u_t = xp.matrix_transpose(self._weight_tiles(weight)) if need_input else None
        image = layout.zeros((c, *self.x_shape[2:], n), grad) if need_input else None
        spans = self._thread_spans()

        def span_gradients(k, first, stop):
            """The summed ((m+2)^2, O, C) weight-gradient tiles of these rows (or None), and the
            band of the first row's input gradient (or None)."""
            du, band = None, None
            if need_input and k:
                band = layout.zeros((c, self.m + 2, self.x_shape[3], n), grad)
            spans_here = [(first, first + 1), (first + 1, stop)] if band is not None else [(first, stop)]  # the band's row alone
            chunks, buffers = self._buffers(o, *spans_here)
            for chunk in chunks:
                grad_tiles = self._flat(output_tiles_transposed(grad_image, *chunk, buffers.take("grad", o, chunk), m=self.m))
                if need_weight:
                    part = grad_tiles @ xp.matrix_transpose(self._input_tiles(chunk, buffers))
                    if du is None:
                        du = part
                    else:
                        du += part
                if need_input:
                    tile_grads = self._tiles(_matmul(u_t, grad_tiles, buffers.take("products", c, chunk, flat=True)), chunk)
                    (row, _), (left, _) = chunk
                    if band is not None and row == first:  # the first row, a chunk of its own: into the band, as padded rows 0..m+1
                        input_tiles_transposed(tile_grads, band, (0, left), (0, self.padding[1]), m=self.m)
                    else:
                        input_tiles_transposed(tile_grads, image, (row, left), self.padding, m=self.m)
            return du, band

        du = None
        for (first, _), (part, band) in zip(spans, threads.run(span_gradients, [(k, *span) for k, span in enumerate(spans)])):
            du = part if du is None else du + part
            if band is not None:
                top = self.m * first - self.padding[0]  # the image row of the band's first
                low, high = max(0, -top), min(self.m + 2, self.x_shape[2] - top)
                if high > low:
                    image[:, top + low:top + high, ...] += band[:, low:high, ...]
        return self._weight_gradient_from_tiles(du) if need_weight else None, image

    def _weight_gradient_from_tiles(self, du):
        """``G^T dU G`` of the ((m+2)^2, O, C) summed tile products: the (1, C*9, O) weight
        gradient."""
        xp = self.xp
        o, c = du.shape[1:]
        du = xp.permute_dims(xp.reshape(du, (self.m + 2, self.m + 2, o, c)), (2, 3, 0, 1))
        g = _transform_matrix(xp, TRANSFORMS[self.m].weight, du)
        return xp.matrix_transpose(xp.reshape(xp.matrix_transpose(g) @ du @ g, (1, o, c * 9)))


class _ChunkBuffers:
    """Arrays reused from chunk to chunk of one product, one per role: each chunk's transformed
    tiles overwrite the last one's instead of taking fresh memory (whose first touch costs more
    than the transform on this machine). NumPy only; elsewhere ``take`` returns None and the
    doors allocate."""

    def __init__(self, xp, like, positions, tiles, n):
        self.xp, self.like, self.positions, self.size, self.n = xp, like, positions, tiles, n
        self.arrays = {}
        self.numpy = backend.fast_path(xp) == "numba"

    def take(self, role, channels, chunk, flat=False):
        """A (P, channels, R, TW, N) array for the tile ranges ``chunk`` = ((first, stop), (left,
        right)) (P tile positions), or its (P, channels, R*TW*N) view when ``flat``; None off
        NumPy."""
        if not self.numpy:
            return None
        if role not in self.arrays:
            self.arrays[role] = self.xp.empty((self.positions, channels, self.size * self.n), dtype=self.like.dtype)
        (first, stop), (left, right) = chunk
        count = (stop - first) * (right - left) * self.n
        piece = self.arrays[role]
        if count != piece.shape[-1]:  # a smaller chunk: the buffer's start, C-contiguous
            piece = self.xp.reshape(self.xp.reshape(piece, (-1,))[:self.positions * channels * count], (self.positions, channels, count))
        return piece if flat else self.xp.reshape(piece, (self.positions, channels, stop - first, right - left, self.n))


def _matmul(a, b, out):
    """``a @ b``, written into ``out`` when it is given (NumPy)."""
    if out is None:
        return a @ b
    return np.matmul(a, b, out=out)


def _transform_matrix(xp, rows, like):
    return xp.asarray(rows, dtype=like.dtype, device=backend.device_of(like))


def _compiled(m):
    """The Numba module of F(m x m, 3x3)'s transforms."""
    if m == 2:
        from ..kernels import numba_winograd

        return numba_winograd
    from ..kernels import numba_winograd4

    return numba_winograd4


def _combination(coefficients, terms):
    """``sum(c * t)`` over the nonzero coefficients, in order; a coefficient of 1 or -1 adds or
    subtracts its term without a multiplication."""
    total = None
    for c, term in zip(coefficients, terms):
        if c == 0:
            continue
        part = term if abs(c) == 1 else float(abs(c)) * term
        if total is None:
            total = part if c > 0 else -part
        else:
            total = total + part if c > 0 else total - part
    return total


def _columns(matrix):
    return [[row[k] for row in matrix] for k in range(len(matrix[0]))]


def input_tiles(image, tile_rows, tile_cols, out=None, *, m):
    """The ((m+2)^2, C, R, TW, N) tiles ``B^T d B`` of tile rows ``tile_rows`` = (first, stop), R
    of them, and tile columns ``tile_cols`` = (left, right), TW of them, of a padded (C, Hp, Wp,
    N) image (Hp >= m*stop + 2, Wp >= m*right + 2), written into ``out`` when given (NumPy).

    Door: ``numba_winograd.input_tiles`` (m = 2) or ``numba_winograd4.input_tiles`` (m = 4) on
    NumPy, else :func:`input_tiles_portable`."""
    if backend.numba_fits(image):
        return _compiled(m).input_tiles(image, tile_rows, tile_cols, out)
    return input_tiles_portable(image, tile_rows, tile_cols, m=m)


def input_tiles_portable(image, tile_rows, tile_cols, *, m):
    """:func:`input_tiles` in Array API calls: the (m+2)^2 strided tile views, combined by B^T's
    rows, then by its rows again for the columns."""
    xp = backend.namespace_of(image)
    size, b_t = m + 2, TRANSFORMS[m].input
    (first, stop), (left, right) = tile_rows, tile_cols
    image = image[:, m * first:m * stop + 2, m * left:m * right + 2, :]
    rows, cols, (c, n) = stop - first, right - left, (image.shape[0], image.shape[-1])
    d = [[image[:, i:i + m * (rows - 1) + 1:m, j:j + m * (cols - 1) + 1:m, :] for j in range(size)] for i in range(size)]
    t = [[_combination(b_t[i], [d[k][j] for k in range(size)]) for j in range(size)] for i in range(size)]
    tiles = xp.empty((size * size, c, rows, cols, n), dtype=image.dtype, device=backend.device_of(image))
    for i in range(size):
        for j in range(size):
            tiles[size * i + j, ...] = _combination(b_t[j], t[i])
    return tiles


def output_tiles(products, bias, out, origin, mask=None, *, m):
    """Write ``A^T p A + bias`` of ((m+2)^2, O, R, TW, N) tile products whose first is tile
    (row, column) ``origin`` into their pixels of the (O, OH, OW, N) image ``out`` (the last tile
    row and column cropped at its edge). With a uint8 ``mask`` laid out like ``out``, the pixels
    are rectified (a following ReLU) and the kept ones marked there.

    Door: ``numba_winograd.output_tiles`` (m = 2) or ``numba_winograd4.output_tiles`` (m = 4) on
    NumPy, else :func:`output_tiles_portable`."""
    if backend.numba_fits(products, bias, out) and (mask is None or backend.is_c_contiguous(mask)):
        return _compiled(m).output_tiles(products, bias, out, origin, mask)
    return output_tiles_portable(products, bias, out, origin, mask, m=m)


def output_tiles_portable(products, bias, out, origin, mask=None, *, m):
    """:func:`output_tiles` in Array API calls: each of the m x m output offsets of every tile
    written through one strided view of the chunk's pixels, whose edge is then cropped; with a
    ``mask``, the ReLU's ``maximum`` and comparison over them."""
    xp = backend.namespace_of(products)
    size, a_t = m + 2, TRANSFORMS[m].output
    _, o, rows, cols, n = products.shape
    (top, left), (height, width) = (m * origin[0], m * origin[1]), out.shape[1:3]
    p = [[products[size * i + j, ...] for j in range(size)] for i in range(size)]
    s = [[_combination(a_t[a], [p[i][j] for i in range(size)]) for j in range(size)] for a in range(m)]
    b = xp.reshape(bias, (o, 1, 1, 1))
    whole = xp.empty((o, m * rows, m * cols, n), dtype=products.dtype, device=backend.device_of(products))
    for a in range(m):
        for c in range(m):
            whole[:, a::m, c::m, :] = _combination(a_t[c], s[a]) + b
    bottom, right = min(height, top + m * rows), min(width, left + m * cols)
    block = whole[:, :bottom - top, :right - left, :]
    if mask is not None:
        block, mask[:, top:bottom, left:right, :] = rectify_portable(block)
    out[:, top:bottom, left:right, :] = block


def output_tiles_transposed(grad, tile_rows, tile_cols, out=None, *, m):
    """The transpose of :func:`output_tiles` (bias aside): the ((m+2)^2, O, R, TW, N) tiles
    ``A g A^T`` of tile rows ``tile_rows`` = (first, stop) and columns ``tile_cols`` = (left,
    right) of an (O, OH, OW, N) gradient, zeros beyond its edge; written into ``out`` when given
    (NumPy).

    Door: ``numba_winograd.output_tiles_transposed`` (m = 2) or
    ``numba_winograd4.output_tiles_transposed`` (m = 4) on NumPy, else
    :func:`output_tiles_transposed_portable`."""
    if backend.numba_fits(grad):
        return _compiled(m).output_tiles_transposed(grad, tile_rows, tile_cols, out)
    return output_tiles_transposed_portable(grad, tile_rows, tile_cols, m=m)


def output_tiles_transposed_portable(grad, tile_rows, tile_cols, *, m):
    """:func:`output_tiles_transposed` in Array API calls over the m x m strided output views,
    combined by A's rows (A^T's columns)."""
    xp = backend.namespace_of(grad)
    size, a = m + 2, _columns(TRANSFORMS[m].output)
    (first, stop), (left, right) = tile_rows, tile_cols
    grad = grad[:, m * first:min(m * stop, grad.shape[1]), m * left:min(m * right, grad.shape[2]), :]
    rows, cols, (o, height, width, n) = stop - first, right - left, grad.shape
    if (height, width) != (m * rows, m * cols):
        full = xp.zeros((o, m * rows, m * cols, n), dtype=grad.dtype, device=backend.device_of(grad))
        full[:, :height, :width, :] = grad
        grad = full
    g = [[grad[:, r::m, c::m, :] for c in range(m)] for r in range(m)]
    s = [[_combination(a[i], [g[r][c] for r in range(m)]) for c in range(m)] for i in range(size)]
    tiles = xp.empty((size * size, o, rows, cols, n), dtype=grad.dtype, device=backend.device_of(grad))
    for i in range(size):
        for j in range(size):
            tiles[size * i + j, ...] = _combination(a[j], s[i])
    return tiles


def input_tiles_transposed(tiles, image, origin, padding, *, m):
    """The transpose of :func:`input_tiles`: add the gradient of ((m+2)^2, C, R, TW, N) tiles
    whose first is tile (row, column) ``origin`` of the image padded by ``padding`` = (ph, pw)
    into the unpadded (C, H, W, N) ``image``: each tile's ``B v B^T`` where it lies (tiles
    overlap by two rows and columns), what falls on the padding left out.

    Door: ``numba_winograd.input_tiles_transposed`` (m = 2) or
    ``numba_winograd4.input_tiles_transposed`` (m = 4) on NumPy, else
    :func:`input_tiles_transposed_portable`."""
    if backend.numba_fits(tiles, image):
        return _compiled(m).input_tiles_transposed(tiles, image, origin, padding)
    return input_tiles_transposed_portable(tiles, image, origin, padding, m=m)


def input_tiles_transposed_portable(tiles, image, origin, padding, *, m):
    """:func:`input_tiles_transposed` in Array API calls: each tile position's ``B v B^T`` (B's
    rows are B^T's columns) added through one strided view into a zeroed block of the padded
    image, the pixels these tiles cover, whose part on the image (the padding left out) is then
    added into those pixels of ``image`` and no others, as the Numba loop does."""
    xp = backend.namespace_of(tiles)
    size, b = m + 2, _columns(TRANSFORMS[m].input)
    _, c, rows, cols, n = tiles.shape
    (ph, pw), (h, w) = padding, tuple(image.shape[1:3])
    block = xp.zeros((c, m * (rows - 1) + size, m * (cols - 1) + size, n), dtype=tiles.dtype, device=backend.device_of(tiles))
    v = [[tiles[size * i + j, ...] for j in range(size)] for i in range(size)]
    t = [[_combination(b[k], [v[i][j] for i in range(size)]) for j in range(size)] for k in range(size)]
    for k in range(size):
        for j in range(size):
            block[:, k:k + m * (rows - 1) + 1:m, j:j + m * (cols - 1) + 1:m, :] += _combination(b[j], t[k])
    top, left = m * origin[0] - ph, m * origin[1] - pw  # the image pixel of the block's first
    low, high = max(0, -top), min(block.shape[1], h - top)
    first_col, last_col = max(0, -left), min(block.shape[2], w - left)
    if high > low and last_col > first_col:
        image[:, top + low:top + high, left + first_col:left + last_col, :] += block[:, low:high, first_col:last_col, :]

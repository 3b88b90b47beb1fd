"""Winograd F(2x2, 3x3) convolution: a 3x3, stride-1 convolution as sixteen GEMMs over tiles,
with 2.25 times fewer multiplications than im2col's one GEMM (Lavin and Gray, "Fast Algorithms
for Convolutional Neural Networks", 2015).

Each 2x2 block of output pixels is computed from the 4x4 input tile around it:
``Y = A^T [(G w G^T) * (B^T d B)] A``, summed over input channels. The elementwise product summed
over channels is, for each of the 16 tile positions, a GEMM of the (O, C) transformed weight with
the (C, tiles) transformed input; the transforms are additions only. The backward pass is the
transpose of the same steps: the output gradient's tiles ``A g A^T`` times the input tiles give
the weight gradient (then ``G^T . G``), times the weight the input tiles' gradient (then
``B . B^T``, added where tiles overlap).

:class:`WinogradWindows` has the interface of ``ops.conv``'s window matrices, so Conv2d (and
ConvTranspose2d's backward) use it unchanged; ``ops.conv.conv_windows`` chooses it. Door for the
four tile transforms: the Numba loops (``xpnn.kernels.numba_winograd``) for C-contiguous float32
or float64 NumPy arrays, else the portable strided-slice versions beside them, which compute the
same terms in the same order (the input transform's transpose adds overlapping tiles in another
order). The matrices below are the definition the tests check the transforms against."""

import numpy as np

from .. import backend, threads
from . import layout
from .windows import padded_batch_last

# The transforms of F(2x2, 3x3), as in Lavin and Gray: B^T (input), G (weight), A^T (output).
INPUT_TRANSFORM = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))
WEIGHT_TRANSFORM = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))
OUTPUT_TRANSFORM = ((1, 1, 1, 0), (0, 1, -1, -1))


# The tiles are transformed, multiplied and transformed back a few tile rows at a time, the rows
# whose transformed tiles and products together take at most about this many bytes (at least one
# row): they then stay in cache between the transforms and the GEMMs (bench/winograd.py). Each of
# xpnn's threads works through chunks of its own (xpnn.threads); 2 MiB is this machine's L2 per core
# (bench/NOTES.md).
CHUNK_BYTES = 1 << 21


class WinogradWindows:
    """A 3x3, stride-1, undilated, ungrouped convolution's input, kept as its zero-padded
    batch-last (C, Hp, Wp, N) image, Hp = 2*TH + 2 for TH = ceil(OH/2) rows of tiles (W likewise).
    ``matmul``, ``weight_gradient``, ``input_gradient`` and ``gradients`` are the convolution's
    products. Each runs over chunks of tile rows (``CHUNK_BYTES``): it transforms a chunk's
    tiles, multiplies them and transforms the products back while they are in cache. The
    backward pass transforms the input tiles again rather than keep them from the forward: that
    costs less than writing out and reading back four values per input pixel, and a layer keeps
    only its padded input."""

    def __init__(self, x, padding, output_size):
        xp = backend.namespace_of(x)
        self.xp = xp
        self.x_shape, self.padding, self.output_size = tuple(x.shape), padding, output_size
        self.tile_grid = ((output_size[0] + 1) // 2, (output_size[1] + 1) // 2)
        self.padded_size = (2 * self.tile_grid[0] + 2, 2 * self.tile_grid[1] + 2)
        self.image = padded_batch_last(x, padding, self.padded_size)

    def _row_chunks(self, outputs, span=None):
        """(first, stop) ranges of the tile rows in ``span`` (default: all) for a layer with
        ``outputs`` channels."""
        span = (0, self.tile_grid[0]) if span is None else span
        n, c = self.x_shape[:2]
        row_bytes = 16 * (c + outputs) * self.tile_grid[1] * n * (self.xp.finfo(self.image.dtype).bits // 8)
        size = max(1, CHUNK_BYTES // max(row_bytes, 1))
        return [(first, min(span[1], first + size)) for first in range(span[0], span[1], size)]

    def _thread_spans(self):
        """The tile rows as one contiguous range per xpnn thread (``xpnn.threads``) on NumPy."""
        parts = threads.get_num_threads() if backend.fast_path(self.xp) == "numba" else 1
        return threads.ranges(self.tile_grid[0], parts)

    def _flat(self, tiles):
        return self.xp.reshape(tiles, (16, tiles.shape[1], -1))

    def _tiles(self, flat, rows):
        return self.xp.reshape(flat, (16, flat.shape[1], rows[1] - rows[0], self.tile_grid[1], self.x_shape[0]))

    def _input_tiles(self, rows, buffers):
        return self._flat(input_tiles(self.image, rows, self.tile_grid[1], buffers.take("input", self.x_shape[1], rows)))

    def _buffers(self, outputs, span):
        """The chunks of tile rows of ``span`` for a layer with ``outputs`` channels, and a
        :class:`_ChunkBuffers` for them."""
        chunks = self._row_chunks(outputs, span)
        return chunks, _ChunkBuffers(self.xp, self.image, chunks[0][1] - chunks[0][0], self.tile_grid[1], self.x_shape[0])

    def _weight_tiles(self, weight):
        """The (16, O, C) transformed weight ``G w G^T`` of a (1, O, C*9) grouped weight."""
        xp = self.xp
        o = weight.shape[1]
        g = _transform_matrix(xp, WEIGHT_TRANSFORM, weight)
        u = g @ xp.reshape(weight, (o, -1, 3, 3)) @ xp.matrix_transpose(g)
        return xp.reshape(xp.permute_dims(u, (2, 3, 0, 1)), (16, o, -1))

    def matmul(self, weight, bias=None):
        """The convolution of the kept input with a (1, O, C*9) weight, plus ``bias`` (O values)
        when given: (1, O, OH*OW*N), batch-last."""
        xp = self.xp
        u = self._weight_tiles(weight)
        o, device = u.shape[1], backend.device_of(u)
        out = xp.empty((o, *self.output_size, self.x_shape[0]), dtype=u.dtype, device=device)
        if bias is None:
            bias = xp.zeros((o,), dtype=u.dtype, device=device)

        def span_products(first, stop):  # each thread its own tile rows and buffers
            chunks, buffers = self._buffers(o, (first, stop))
            for rows in chunks:
                products = _matmul(u, self._input_tiles(rows, buffers), buffers.take("products", o, rows, flat=True))
                output_tiles(self._tiles(products, rows), bias, out, rows[0])

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
        xpnn thread takes a range of tile rows; as tiles overlap by two image rows, the first tile
        row of every range but the first is left to the end, when the threads have finished, so no
        two threads add into the same input-gradient rows."""
        xp = self.xp
        o, (n, c) = grad.shape[1], self.x_shape[:2]
        grad_image = xp.reshape(grad, (o, *self.output_size, n))
        u_t = xp.matrix_transpose(self._weight_tiles(weight)) if need_input else None
        image = layout.zeros((c, *self.x_shape[2:], n), grad) if need_input else None

        def span_gradients(first, stop):  # the summed (16, O, C) weight-gradient tiles of these rows, or None
            if first >= stop:
                return None
            du = None
            chunks, buffers = self._buffers(o, (first, stop))
            for rows in chunks:
                grad_tiles = self._flat(output_tiles_transposed(grad_image, rows, self.tile_grid[1], buffers.take("grad", o, rows)))
                if need_weight:
                    part = grad_tiles @ xp.matrix_transpose(self._input_tiles(rows, buffers))
                    if du is None:
                        du = part
                    else:
                        du += part
                if need_input:
                    tile_grads = _matmul(u_t, grad_tiles, buffers.take("products", c, rows, flat=True))
                    input_tiles_transposed(self._tiles(tile_grads, rows), image, rows[0], self.padding)
            return du

        spans = self._thread_spans()
        deferred = need_input and len(spans) > 1  # every range's first row but the first range's
        partials = threads.run(span_gradients, [(first + 1 if deferred and k else first, stop) for k, (first, stop) in enumerate(spans)])
        partials += [span_gradients(first, first + 1) for first, _ in spans[1:]] if deferred else []
        du = None
        for part in partials:
            if part is not None:
                du = part if du is None else du + part
        return self._weight_gradient_from_tiles(du) if need_weight else None, image

    def _weight_gradient_from_tiles(self, du):
        """``G^T dU G`` of the (16, O, C) summed tile products: the (1, C*9, O) weight gradient."""
        xp = self.xp
        o, c = du.shape[1:]
        du = xp.permute_dims(xp.reshape(du, (4, 4, o, c)), (2, 3, 0, 1))
        g = _transform_matrix(xp, WEIGHT_TRANSFORM, du)
        return xp.matrix_transpose(xp.reshape(xp.matrix_transpose(g) @ du @ g, (1, o, c * 9)))


class _ChunkBuffers:
    """Arrays reused from chunk to chunk of one product, one per role: each chunk's transformed
    tiles overwrite the last one's instead of taking fresh memory (whose first touch costs more
    than the transform on this machine). NumPy only; elsewhere ``take`` returns None and the
    doors allocate."""

    def __init__(self, xp, like, rows, cols, n):
        self.xp, self.like, self.size, self.cols, self.n = xp, like, rows, cols, n
        self.arrays = {}
        self.numpy = backend.fast_path(xp) == "numba"

    def take(self, role, channels, rows, flat=False):
        """A (16, channels, R, TW, N) array for tile rows ``rows`` (R of them), or its (16,
        channels, R*TW*N) view when ``flat``; None off NumPy."""
        if not self.numpy:
            return None
        if role not in self.arrays:
            self.arrays[role] = self.xp.empty((16, channels, self.size * self.cols * self.n), dtype=self.like.dtype)
        count = (rows[1] - rows[0]) * self.cols * self.n
        piece = self.arrays[role]
        if count != piece.shape[-1]:  # the last, shorter chunk: the buffer's start, C-contiguous
            piece = self.xp.reshape(self.xp.reshape(piece, (-1,))[:16 * channels * count], (16, channels, count))
        return piece if flat else self.xp.reshape(piece, (16, channels, rows[1] - rows[0], self.cols, self.n))


def _matmul(a, b, out):
    """``a @ b``, written into ``out`` when it is given (NumPy)."""
    if out is None:
        return a @ b
    return np.matmul(a, b, out=out)


def _transform_matrix(xp, rows, like):
    return xp.asarray(rows, dtype=like.dtype, device=backend.device_of(like))


def input_tiles(image, tile_rows, tile_cols, out=None):
    """The (16, C, R, TW, N) tiles ``B^T d B`` of tile rows ``tile_rows`` = (first, stop), R of
    them, of a padded (C, Hp, 2*TW+2, N) image (Hp >= 2*stop + 2).

    Door: ``numba_winograd.input_tiles`` on NumPy, else :func:`input_tiles_portable`."""
    if backend.numba_fits(image):
        from ..kernels import numba_winograd

        return numba_winograd.input_tiles(image, tile_rows, tile_cols, out)
    return input_tiles_portable(image, tile_rows, tile_cols)


def input_tiles_portable(image, tile_rows, tile_cols):
    """:func:`input_tiles` in Array API calls: the 16 strided tile views, combined."""
    xp = backend.namespace_of(image)
    image = image[:, 2 * tile_rows[0]:2 * tile_rows[1] + 2, ...]
    rows, cols, (c, n) = tile_rows[1] - tile_rows[0], tile_cols, (image.shape[0], image.shape[-1])
    d = [[image[:, i:i + 2 * rows - 1:2, j:j + 2 * cols - 1:2, :] for j in range(4)] for i in range(4)]
    t = [[d[0][j] - d[2][j] for j in range(4)], [d[1][j] + d[2][j] for j in range(4)],
         [d[2][j] - d[1][j] for j in range(4)], [d[1][j] - d[3][j] for j in range(4)]]
    tiles = xp.empty((16, c, rows, cols, n), dtype=image.dtype, device=backend.device_of(image))
    for i in range(4):
        tiles[4 * i, ...] = t[i][0] - t[i][2]
        tiles[4 * i + 1, ...] = t[i][1] + t[i][2]
        tiles[4 * i + 2, ...] = t[i][2] - t[i][1]
        tiles[4 * i + 3, ...] = t[i][1] - t[i][3]
    return tiles


def output_tiles(products, bias, out, first_row):
    """Write ``A^T m A + bias`` of (16, O, R, TW, N) tile products, tile rows first_row onwards,
    into their rows of the (O, OH, OW, N) image ``out``.

    Door: ``numba_winograd.output_tiles`` on NumPy, else :func:`output_tiles_portable`."""
    if backend.numba_fits(products, bias, out):
        from ..kernels import numba_winograd

        return numba_winograd.output_tiles(products, bias, out, first_row)
    return output_tiles_portable(products, bias, out, first_row)


def output_tiles_portable(products, bias, out, first_row):
    """:func:`output_tiles` in Array API calls: each of the four output offsets of every tile
    written through one strided view of the chunk's rows, whose odd edge is then cropped."""
    xp = backend.namespace_of(products)
    _, o, rows, cols, n = products.shape
    top, (height, width) = 2 * first_row, out.shape[1:3]
    m = [[products[4 * i + j, ...] for j in range(4)] for i in range(4)]
    s = [[m[0][j] + m[1][j] + m[2][j] for j in range(4)], [m[1][j] - m[2][j] - m[3][j] for j in range(4)]]
    b = xp.reshape(bias, (o, 1, 1, 1))
    whole = xp.empty((o, 2 * rows, 2 * cols, n), dtype=products.dtype, device=backend.device_of(products))
    for a in range(2):
        whole[:, a::2, 0::2, :] = s[a][0] + s[a][1] + s[a][2] + b
        whole[:, a::2, 1::2, :] = s[a][1] - s[a][2] - s[a][3] + b
    bottom = min(height, top + 2 * rows)
    out[:, top:bottom, ...] = whole[:, :bottom - top, :width, :]


def output_tiles_transposed(grad, tile_rows, tile_cols, out=None):
    """The transpose of :func:`output_tiles` (bias aside): the (16, O, R, TW, N) tiles
    ``A g A^T`` of tile rows ``tile_rows`` = (first, stop) of an (O, OH, OW, N) gradient, zeros
    beyond an odd edge.

    Door: ``numba_winograd.output_tiles_transposed`` on NumPy, else
    :func:`output_tiles_transposed_portable`."""
    if backend.numba_fits(grad):
        from ..kernels import numba_winograd

        return numba_winograd.output_tiles_transposed(grad, tile_rows, tile_cols, out)
    return output_tiles_transposed_portable(grad, tile_rows, tile_cols)


def output_tiles_transposed_portable(grad, tile_rows, tile_cols):
    """:func:`output_tiles_transposed` in Array API calls over the four strided output views."""
    xp = backend.namespace_of(grad)
    grad = grad[:, 2 * tile_rows[0]:min(2 * tile_rows[1], grad.shape[1]), ...]
    rows, cols, (o, height, width, n) = tile_rows[1] - tile_rows[0], tile_cols, grad.shape
    if (height, width) != (2 * rows, 2 * cols):
        full = xp.zeros((o, 2 * rows, 2 * cols, n), dtype=grad.dtype, device=backend.device_of(grad))
        full[:, :height, :width, :] = grad
        grad = full
    g = [[grad[:, a::2, b::2, :] for b in range(2)] for a in range(2)]
    s = [[g[0][b] for b in range(2)], [g[0][b] + g[1][b] for b in range(2)],
         [g[0][b] - g[1][b] for b in range(2)], [-g[1][b] for b in range(2)]]
    tiles = xp.empty((16, o, rows, cols, n), dtype=grad.dtype, device=backend.device_of(grad))
    for i in range(4):
        tiles[4 * i, ...] = s[i][0]
        tiles[4 * i + 1, ...] = s[i][0] + s[i][1]
        tiles[4 * i + 2, ...] = s[i][0] - s[i][1]
        tiles[4 * i + 3, ...] = -s[i][1]
    return tiles


def input_tiles_transposed(tiles, image, first_row, padding):
    """The transpose of :func:`input_tiles`: add the gradient of (16, C, R, TW, N) tiles, tile
    rows first_row onwards of the image padded by ``padding`` = (ph, pw), into the unpadded
    (C, H, W, N) ``image``: each tile's ``B v B^T`` where it lies (tiles overlap by two rows and
    columns), what falls on the padding left out.

    Door: ``numba_winograd.input_tiles_transposed`` on NumPy, else
    :func:`input_tiles_transposed_portable`."""
    if backend.numba_fits(tiles, image):
        from ..kernels import numba_winograd

        return numba_winograd.input_tiles_transposed(tiles, image, first_row, padding)
    return input_tiles_transposed_portable(tiles, image, first_row, padding)


def input_tiles_transposed_portable(tiles, image, first_row, padding):
    """:func:`input_tiles_transposed` in Array API calls: one strided add per tile position into
    a zero padded image, whose interior is then added into ``image``."""
    xp = backend.namespace_of(tiles)
    _, c, rows, cols, n = tiles.shape
    (ph, pw), (h, w) = padding, tuple(image.shape[1:3])
    padded = xp.zeros((c, max(h + 2 * ph, 2 * (first_row + rows) + 2), max(w + 2 * pw, 2 * cols + 2), n),
                      dtype=tiles.dtype, device=backend.device_of(tiles))
    v = [[tiles[4 * i + j, ...] for j in range(4)] for i in range(4)]
    t = [v[0], [v[1][j] - v[2][j] + v[3][j] for j in range(4)], [v[1][j] + v[2][j] - v[0][j] for j in range(4)],
         [-v[3][j] for j in range(4)]]
    top = 2 * first_row
    for i in range(4):
        parts = (t[i][0], t[i][1] - t[i][2] + t[i][3], t[i][1] + t[i][2] - t[i][0], -t[i][3])
        for j in range(4):
            padded[:, top + i:top + i + 2 * rows - 1:2, j:j + 2 * cols - 1:2, :] += parts[j]
    image += padded[:, ph:ph + h, pw:pw + w, :]

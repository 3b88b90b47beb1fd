"""Winograd F(2x2, 3x3) (``xpnn.ops.winograd``): the tiles' products equal im2col's on a grid of
geometries (odd and even sizes, paddings 0-2, batch 1 and more), through the Numba transforms on
NumPy and the portable ones elsewhere; each Numba transform equals its portable twin; Conv2d
takes Winograd exactly where ``ops.conv.winograd_fits`` says and its gradients pass the float64
finite-difference check there."""

import array_api_strict
import numpy as np
import pytest

from gradcheck import check_layer
from xpnn import backend as xb
from xpnn import nn
from xpnn.ops import conv, winograd

GEOMETRIES = [  # (N, C, O, H, W, padding)
    (1, 1, 1, 3, 3, 0),
    (2, 3, 5, 4, 4, 1),
    (3, 4, 2, 5, 7, 1),
    (1, 2, 3, 6, 5, 0),
    (2, 5, 4, 2, 3, 2),
    (4, 32, 33, 8, 6, 1),
    (9, 3, 4, 7, 7, 0),
]


def _geometry(h, w, padding):
    return ((3, 3), (1, 1), (padding, padding), (1, 1), (h + 2 * padding - 2, w + 2 * padding - 2))


@pytest.mark.parametrize("n, c, o, h, w, padding", GEOMETRIES)
def test_winograd_products_equal_im2col(backend, rng, n, c, o, h, w, padding):
    """Forward (with and without bias), the weight gradient, the input gradient, alone and
    together, against the window matrix's products on NumPy, float64."""
    x = rng.normal(size=(n, c, h, w))
    weight = rng.normal(size=(1, o, c * 9))
    bias = rng.normal(size=o)
    geometry = _geometry(h, w, padding)
    reference = conv.WindowMatrix(x, *geometry, 1)
    y = reference.matmul(weight, bias)
    grad = rng.normal(size=y.shape)
    tiles = winograd.WinogradWindows(backend.asarray(x), geometry[2], geometry[4])
    be_weight, be_grad = backend.asarray(weight), backend.asarray(grad)

    def close(got, expected):
        np.testing.assert_allclose(xb.to_numpy(got), expected, rtol=1e-11, atol=1e-11)

    close(tiles.matmul(be_weight, backend.asarray(bias)), y)
    close(tiles.matmul(be_weight), reference.matmul(weight))
    grad_w, grad_x = tiles.gradients(be_weight, be_grad, True)
    close(grad_w, reference.weight_gradient(grad))
    close(grad_x, reference.input_gradient(weight, grad))
    assert tuple(grad_x.shape) == (c, h, w, n)
    only_w, none = tiles.gradients(be_weight, be_grad, False)
    assert none is None
    close(only_w, reference.weight_gradient(grad))
    close(tiles.weight_gradient(be_grad), reference.weight_gradient(grad))
    close(tiles.input_gradient(be_weight, be_grad), reference.input_gradient(weight, grad))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tile_grid, tile_rows, n", [((1, 1), (0, 1), 1), ((3, 2), (1, 3), 5), ((4, 4), (0, 2), 16)])
def test_numba_transforms_equal_their_portable_twins(rng, dtype, tile_grid, tile_rows, n):
    """Each of the four tile transforms, over a range of tile rows: the Numba loop against the
    strided-slice version run on array_api_strict. Three add the same terms in the same order
    (equal bits); the input transform's transpose adds overlapping tiles in another order."""
    from xpnn.kernels import numba_winograd

    rows, cols = tile_grid
    chunk = tile_rows[1] - tile_rows[0]
    padded = (2 * rows + 2, 2 * cols + 2)
    odd = (2 * rows - 1, 2 * cols)  # an odd output height: the last tile row's second half dropped
    image = rng.normal(size=(3, *padded, n)).astype(dtype)
    products = rng.normal(size=(16, 4, chunk, cols, n)).astype(dtype)
    bias = rng.normal(size=4).astype(dtype)
    grad = rng.normal(size=(4, *odd, n)).astype(dtype)
    strict = array_api_strict.asarray

    np.testing.assert_array_equal(numba_winograd.input_tiles(image, tile_rows, cols),
                                  np.asarray(winograd.input_tiles_portable(strict(image), tile_rows, cols)))
    compiled, portable = np.full((4, *odd, n), 7, dtype=dtype), strict(np.full((4, *odd, n), 7, dtype=dtype))
    numba_winograd.output_tiles(products, bias, compiled, tile_rows[0])
    winograd.output_tiles_portable(strict(products), strict(bias), portable, tile_rows[0])
    np.testing.assert_array_equal(compiled, np.asarray(portable))
    written = np.zeros(odd[0], dtype=bool)
    written[2 * tile_rows[0]:2 * tile_rows[1]] = True
    assert np.all(compiled[:, ~written] == 7) and not np.any(compiled[:, written] == 7)
    np.testing.assert_array_equal(numba_winograd.output_tiles_transposed(grad, tile_rows, cols),
                                  np.asarray(winograd.output_tiles_transposed_portable(strict(grad), tile_rows, cols)))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for padding in ((0, 0), (1, 0), (1, 1)):  # the gradient of an image padded this much, the padding left out
        start = rng.normal(size=(3, padded[0] - 2 * padding[0], padded[1] - 2 * padding[1], n)).astype(dtype)
        compiled, portable = start.copy(), strict(start)
        numba_winograd.input_tiles_transposed(np.ascontiguousarray(products[:, :3]), compiled, tile_rows[0], padding)
        winograd.input_tiles_transposed_portable(strict(products[:, :3]), portable, tile_rows[0], padding)
        np.testing.assert_allclose(compiled, np.asarray(portable), rtol=tol, atol=tol)


def test_the_transforms_are_lavin_and_grays_matrices(rng):
    """Each tile's input transform is B^T d B, each output A^T m A (plus the bias), and the
    weight's G w G^T, with the matrices of ``ops.winograd`` (Lavin and Gray, 2015), checked tile
    by tile against einsum."""
    b_t, g, a_t = (np.array(m, dtype=float) for m in (winograd.INPUT_TRANSFORM, winograd.WEIGHT_TRANSFORM, winograd.OUTPUT_TRANSFORM))
    image = rng.normal(size=(2, 8, 6, 3))
    tiles = winograd.input_tiles(image, (0, 3), 2)
    for r in range(3):
        for q in range(2):
            d = image[:, 2 * r:2 * r + 4, 2 * q:2 * q + 4, :]
            expected = np.einsum("ik,ckln,jl->ijcn", b_t, d, b_t).reshape(16, 2, 3)
            np.testing.assert_allclose(tiles[:, :, r, q, :], expected, rtol=1e-13, atol=1e-13)
    bias = rng.normal(size=2)
    out = np.empty((2, 6, 4, 3))
    winograd.output_tiles(tiles, bias, out, 0)
    for r in range(3):
        for q in range(2):
            m = tiles[:, :, r, q, :].reshape(4, 4, 2, 3)
            expected = np.einsum("ai,ijcn,bj->cabn", a_t, m, a_t) + bias[:, None, None, None]
            np.testing.assert_allclose(out[:, 2 * r:2 * r + 2, 2 * q:2 * q + 2, :], expected, rtol=1e-13, atol=1e-13)
    weight = rng.normal(size=(1, 4, 2 * 9))
    u = winograd.WinogradWindows(rng.normal(size=(1, 2, 4, 4)), (1, 1), (4, 4))._weight_tiles(weight)
    expected = np.einsum("ik,ockl,jl->ijoc", g, weight.reshape(4, 2, 3, 3), g).reshape(16, 4, 2)
    np.testing.assert_allclose(u, expected, rtol=1e-13, atol=1e-13)


def test_each_backward_transform_is_the_transpose_of_its_forward_one(rng):
    """<B^T d B, v> = <d, B v B^T> and <A^T m A, g> = <m, A g A^T>, summed over tiles (the bias
    zero): the backward transforms are the exact adjoints of the forward ones."""
    image = rng.normal(size=(2, 8, 6, 3))
    tiles = rng.normal(size=(16, 2, 3, 2, 3))
    forward = np.sum(winograd.input_tiles(image, (0, 3), 2) * tiles)
    image_grad = np.zeros_like(image)
    winograd.input_tiles_transposed(tiles, image_grad, 0, (0, 0))
    assert np.isclose(forward, np.sum(image * image_grad), rtol=1e-12)
    grad = rng.normal(size=(2, 5, 4, 3))
    out = np.empty_like(grad)
    winograd.output_tiles(tiles, np.zeros(2), out, 0)
    assert np.isclose(np.sum(out * grad), np.sum(tiles * winograd.output_tiles_transposed(grad, (0, 3), 2)), rtol=1e-12)


ROW_BYTES = 16 * (4 + 5) * 3 * 3 * 8  # a tile row of the layer below: 16 x (C + O) x TW x N float64s


@pytest.mark.parametrize("chunk_bytes, chunks", [(1, 5), (2 * ROW_BYTES, 3), (1 << 40, 1)])
def test_chunks_of_tile_rows_give_the_products_of_one_chunk(monkeypatch, rng, chunk_bytes, chunks):
    """One tile row per chunk (CHUNK_BYTES 1), two (the last chunk one row, in buffers of its
    own) and all rows in one chunk give the window matrix's products."""
    monkeypatch.setattr(winograd, "CHUNK_BYTES", chunk_bytes)
    x = rng.normal(size=(3, 4, 9, 6))
    weight, grad = rng.normal(size=(1, 5, 36)), rng.normal(size=(1, 5, 9 * 6 * 3))
    geometry = _geometry(9, 6, 1)
    tiles = winograd.WinogradWindows(x, geometry[2], geometry[4])
    assert len(tiles._row_chunks(5)) == chunks
    reference = conv.WindowMatrix(x, *geometry, 1)
    np.testing.assert_allclose(tiles.matmul(weight), reference.matmul(weight), rtol=1e-11, atol=1e-11)
    for got, expected in zip(tiles.gradients(weight, grad, True), reference.gradients(weight, grad, True)):
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-11)


def _windows_kind(x, out_channels, kernel=3, stride=1, padding=1, groups=1):
    layer = nn.Conv2d(x.shape[1], out_channels, kernel, stride=stride, padding=padding, groups=groups,
                      dtype=xb.dtype_name(x.dtype), xp=None if isinstance(x, np.ndarray) else "array_api_strict")
    layer(x)
    return type(layer._windows).__name__


def test_conv2d_takes_winograd_only_where_it_pays():
    """NumPy, 3x3, stride 1, undilated, one group, float32/64, >= WINOGRAD_MIN_CHANNELS channels
    in and out, >= WINOGRAD_MIN_PIXELS output pixels, an even output: Winograd; anything else: im2col
    (a window matrix, whole or streamed)."""
    c = conv.WINOGRAD_MIN_CHANNELS
    n = -(-conv.WINOGRAD_MIN_PIXELS // 16)  # enough for the 4x4 output of padding 0
    x = np.zeros((n, c, 6, 6), dtype=np.float32)
    assert _windows_kind(x, c) == "WinogradWindows"
    assert _windows_kind(x.astype(np.float64), c, padding=0) == "WinogradWindows"
    assert _windows_kind(x, c - 1) != "WinogradWindows"
    assert _windows_kind(np.zeros((n, c - 1, 6, 6), np.float32), c) != "WinogradWindows"
    few = (conv.WINOGRAD_MIN_PIXELS - 1) // 36  # a 6x6 output of one pixel fewer, at most
    assert _windows_kind(np.zeros((few, c, 6, 6), np.float32), c) != "WinogradWindows"
    assert _windows_kind(np.zeros((n, c, 7, 6), np.float32), c) != "WinogradWindows"  # odd output height
    assert _windows_kind(x, c, stride=2) != "WinogradWindows"
    assert _windows_kind(x, c, kernel=5, padding=2) != "WinogradWindows"
    assert _windows_kind(x, c, groups=2) != "WinogradWindows"
    assert _windows_kind(x.astype(np.float16), c) != "WinogradWindows"
    assert _windows_kind(array_api_strict.asarray(x), c) != "WinogradWindows"


@pytest.mark.parametrize("shape, out, padding", [((2, 3, 4, 4), 4, 1), ((1, 2, 6, 4), 3, 0), ((3, 2, 5, 5), 2, 1)])
def test_conv2d_through_winograd_passes_the_gradient_check(monkeypatch, rng, shape, out, padding):
    """With the channel and pixel thresholds lowered to 1 and the few-output paths (direct,
    streamed) off, small float64 Conv2d layers run through Winograd (the odd 5x5 one through the
    window matrix) and their input and parameter gradients match finite differences; forward and
    backward equal those of the window matrix."""
    monkeypatch.setattr(conv, "WINOGRAD_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv, "WINOGRAD_MIN_PIXELS", 1)
    monkeypatch.setattr(conv, "DIRECT_MAX_OUTPUTS", 0)
    monkeypatch.setattr(conv, "STREAM_MAX_OUTPUTS", 0)
    layer = nn.Conv2d(shape[1], out, 3, padding=padding, generator=np.random.default_rng(5))
    layer.bias.data = rng.normal(size=out).astype(np.float32)
    be = type("Numpy", (), {"device": "cpu", "asarray": staticmethod(np.asarray)})
    check_layer(layer, rng.normal(size=shape), be, rng)
    x = rng.normal(size=shape)
    grad = rng.normal(size=layer(x).shape)
    expected = winograd.WinogradWindows if shape[2] % 2 == 0 else conv.WindowMatrix
    assert type(layer._windows) is expected
    results = []
    for threshold in (1, 10**9):
        monkeypatch.setattr(conv, "WINOGRAD_MIN_CHANNELS", threshold)
        layer.zero_grad()
        y = layer(x).copy()
        results.append((y, layer.backward(grad).copy(), layer.weight.grad.copy(), layer.bias.grad.copy()))
        layer.zero_grad()
        layer(x)
        layer.backward_params(grad)
        np.testing.assert_allclose(layer.weight.grad, results[-1][2], rtol=1e-12, atol=1e-12)
    for winograd_result, matrix_result in zip(*results):
        np.testing.assert_allclose(winograd_result, matrix_result, rtol=1e-11, atol=1e-11)

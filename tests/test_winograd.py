"""Winograd F(2x2, 3x3) and F(4x4, 3x3) (``xpnn.ops.winograd``): the tiles' products equal
im2col's on a grid of geometries (odd and even sizes, paddings 0-2, batch 1 and more), through the
Numba transforms on NumPy and the portable ones elsewhere; each Numba transform equals its
portable twin; Conv2d takes Winograd, and which tile, exactly where ``ops.conv.winograd_tile``
says, and its gradients pass the float64 finite-difference check there."""

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


TILES = (2, 4)


@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("n, c, o, h, w, padding", GEOMETRIES)
def test_winograd_products_equal_im2col(backend, rng, m, n, c, o, h, w, padding):
    """Forward (with and without bias), the weight gradient, the input gradient, alone and
    together, against the window matrix's products on NumPy, float64, for each tile."""
    x = rng.normal(size=(n, c, h, w))
    weight = rng.normal(size=(1, o, c * 9))
    bias = rng.normal(size=o)
    geometry = _geometry(h, w, padding)
    reference = conv.WindowMatrix(x, *geometry, 1)
    y = reference.matmul(weight, bias)
    grad = rng.normal(size=y.shape)
    tiles = winograd.WinogradWindows(backend.asarray(x), geometry[2], geometry[4], m)
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


def _assert_twins_equal(m, compiled, portable, dtype):
    """For F(2x2, 3x3) the Numba loop adds the portable version's terms in its order: equal bits.
    F(4x4, 3x3)'s loops share sums between rows: equal to round-off of the largest value."""
    portable = np.asarray(portable)
    if m == 2:
        np.testing.assert_array_equal(compiled, portable)
    else:
        scale = np.abs(portable).max() * (1e-6 if dtype == np.float32 else 1e-14)
        np.testing.assert_allclose(compiled, portable, rtol=0, atol=scale)


@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tile_grid, tile_rows, tile_cols, n", [
    ((1, 1), (0, 1), (0, 1), 1), ((3, 2), (1, 3), (0, 2), 5), ((4, 4), (0, 2), (0, 4), 16), ((4, 5), (2, 4), (2, 5), 3),
])
@pytest.mark.parametrize("narrow", [False, True])
def test_numba_transforms_equal_their_portable_twins(rng, m, dtype, tile_grid, tile_rows, tile_cols, n, narrow):
    """Each of the four tile transforms, over a block of tile rows and columns: the Numba loop
    against the strided-slice version run on array_api_strict, with an output cropped by a row at
    the bottom and by columns at the right edge (none or one for F(2x2, 3x3); one or three,
    leaving one column of the last tile, for F(4x4, 3x3)). Only the block's pixels are written.
    The input transform's transpose adds overlapping tiles in another order than its twin."""
    from xpnn.kernels import numba_winograd, numba_winograd4

    compiled_module = {2: numba_winograd, 4: numba_winograd4}[m]
    rows, cols = tile_grid
    block, positions = (tile_rows[1] - tile_rows[0], tile_cols[1] - tile_cols[0]), (m + 2) ** 2
    origin = (tile_rows[0], tile_cols[0])
    padded = (m * rows + 2, m * cols + 2)
    cropped = (m * rows - 1, m * cols - {2: (0, 1), 4: (1, 3)}[m][narrow])  # the last tile row and column cut short
    image = rng.normal(size=(3, *padded, n)).astype(dtype)
    products = rng.normal(size=(positions, 4, *block, n)).astype(dtype)
    bias = rng.normal(size=4).astype(dtype)
    grad = rng.normal(size=(4, *cropped, n)).astype(dtype)
    strict = array_api_strict.asarray

    _assert_twins_equal(m, compiled_module.input_tiles(image, tile_rows, tile_cols),
                        winograd.input_tiles_portable(strict(image), tile_rows, tile_cols, m=m), dtype)
    compiled, portable = np.full((4, *cropped, n), 7, dtype=dtype), strict(np.full((4, *cropped, n), 7, dtype=dtype))
    compiled_module.output_tiles(products, bias, compiled, origin)
    winograd.output_tiles_portable(strict(products), strict(bias), portable, origin, m=m)
    _assert_twins_equal(m, compiled, portable, dtype)
    written = np.zeros(cropped, dtype=bool)
    written[m * tile_rows[0]:m * tile_rows[1], m * tile_cols[0]:m * tile_cols[1]] = True
    assert np.all(compiled[:, ~written] == 7) and not np.any(compiled[:, written] == 7)
    _assert_twins_equal(m, compiled_module.output_tiles_transposed(grad, tile_rows, tile_cols),
                        winograd.output_tiles_transposed_portable(strict(grad), tile_rows, tile_cols, m=m), dtype)
    tol = 1e-6 if dtype == np.float32 else 1e-14
    for padding in ((0, 0), (1, 0), (1, 1)):  # the gradient of an image padded this much, the padding left out
        start = rng.normal(size=(3, padded[0] - 2 * padding[0], padded[1] - 2 * padding[1], n)).astype(dtype)
        compiled, portable = start.copy(), strict(start)
        compiled_module.input_tiles_transposed(np.ascontiguousarray(products[:, :3]), compiled, origin, padding)
        winograd.input_tiles_transposed_portable(strict(products[:, :3]), portable, origin, padding, m=m)
        scale = np.abs(np.asarray(portable)).max()
        np.testing.assert_allclose(compiled, np.asarray(portable), rtol=0, atol=tol * scale)
        reach = np.zeros(start.shape[1:3], dtype=bool)  # the pixels the block's tiles cover, less the padding
        reach[max(0, m * origin[0] - padding[0]):m * tile_rows[1] + 2 - padding[0],
              max(0, m * origin[1] - padding[1]):m * tile_cols[1] + 2 - padding[1]] = True
        assert np.array_equal(compiled[:, ~reach], start[:, ~reach])


@pytest.mark.parametrize("m", TILES)
def test_the_transforms_are_lavin_and_grays_matrices(rng, m):
    """Each tile's input transform is B^T d B, each output A^T p A (plus the bias), and the
    weight's G w G^T, with the matrices of ``ops.winograd.TRANSFORMS`` (Lavin and Gray, 2015),
    checked tile by tile against einsum, through the door each takes on NumPy."""
    b_t, g, a_t = (np.array(matrix, dtype=float) for matrix in winograd.TRANSFORMS[m])
    size = m + 2
    assert b_t.shape == (size, size) and g.shape == (size, 3) and a_t.shape == (m, size)
    image = rng.normal(size=(2, 3 * m + 2, 2 * m + 2, 3))
    tiles = winograd.input_tiles(image, (0, 3), (0, 2), m=m)
    for r in range(3):
        for q in range(2):
            d = image[:, m * r:m * r + size, m * q:m * q + size, :]
            expected = np.einsum("ik,ckln,jl->ijcn", b_t, d, b_t).reshape(size * size, 2, 3)
            np.testing.assert_allclose(tiles[:, :, r, q, :], expected, rtol=1e-12, atol=1e-12)
    bias = rng.normal(size=2)
    out = np.empty((2, 3 * m, 2 * m, 3))
    winograd.output_tiles(tiles, bias, out, (0, 0), m=m)
    for r in range(3):
        for q in range(2):
            p = tiles[:, :, r, q, :].reshape(size, size, 2, 3)
            expected = np.einsum("ai,ijcn,bj->cabn", a_t, p, a_t) + bias[:, None, None, None]
            np.testing.assert_allclose(out[:, m * r:m * r + m, m * q:m * q + m, :], expected, rtol=1e-12, atol=1e-12)
    weight = rng.normal(size=(1, 4, 2 * 9))
    u = winograd.WinogradWindows(rng.normal(size=(1, 2, 4, 4)), (1, 1), (4, 4), m)._weight_tiles(weight)
    expected = np.einsum("ik,ockl,jl->ijoc", g, weight.reshape(4, 2, 3, 3), g).reshape(size * size, 4, 2)
    np.testing.assert_allclose(u, expected, rtol=1e-13, atol=1e-13)



@pytest.mark.parametrize("m, tolerance", [(2, 2e-6), (4, 2e-5)])
def test_float32_tiles_stay_close_to_a_float64_window_matrix(rng, m, tolerance):
    """The accuracy float32 training gets: forward and both gradients of a 32 -> 16 layer with
    weights scaled as He's initialisation does, against the float64 window matrix, within
    ``tolerance`` of each result's largest value (F(4x4, 3x3)'s larger matrix entries cost about
    ten times F(2x2, 3x3)'s error; bench/winograd.py prints the error of each layer)."""
    x = rng.normal(size=(4, 32, 10, 9))
    weight = rng.normal(size=(1, 16, 32 * 9)) * np.sqrt(2 / (32 * 9))
    grad = rng.normal(size=(1, 16, 10 * 9 * 4))
    geometry = _geometry(10, 9, 1)
    reference = conv.WindowMatrix(x, *geometry, 1)
    tiles = winograd.WinogradWindows(x.astype(np.float32), geometry[2], geometry[4], m)
    f32 = (weight.astype(np.float32), grad.astype(np.float32))
    pairs = [(tiles.matmul(f32[0]), reference.matmul(weight)), *zip(tiles.gradients(*f32, True), reference.gradients(weight, grad, True))]
    for got, expected in pairs:
        assert got.dtype == np.float32
        assert np.abs(got - expected).max() <= tolerance * np.abs(expected).max()


def test_the_transforms_compute_a_3x3_correlation():
    """The matrices themselves: for every 3x3 kernel and tile, A^T [(G w G^T) * (B^T d B)] A is the
    m x m correlation of the tile with the kernel (exact in float64 up to round-off)."""
    rng = np.random.default_rng(3)
    for m in TILES:
        b_t, g, a_t = (np.array(matrix, dtype=float) for matrix in winograd.TRANSFORMS[m])
        d, w = rng.normal(size=(m + 2, m + 2)), rng.normal(size=(3, 3))
        expected = np.array([[np.sum(d[i:i + 3, j:j + 3] * w) for j in range(m)] for i in range(m)])
        np.testing.assert_allclose(a_t @ ((g @ w @ g.T) * (b_t @ d @ b_t.T)) @ a_t.T, expected, rtol=1e-12, atol=1e-12)


def test_an_unknown_tile_is_refused_with_the_tiles_there_are(rng):
    with pytest.raises(ValueError, match=r"expected m in \[2, 4\], got 3"):
        winograd.WinogradWindows(rng.normal(size=(1, 2, 4, 4)), (1, 1), (4, 4), 3)


@pytest.mark.parametrize("m", TILES)
def test_each_backward_transform_is_the_transpose_of_its_forward_one(rng, m):
    """<B^T d B, v> = <d, B v B^T> and <A^T p A, g> = <p, A g A^T>, summed over tiles (the bias
    zero): the backward transforms are the exact adjoints of the forward ones."""
    size = m + 2
    image = rng.normal(size=(2, 3 * m + 2, 2 * m + 2, 3))
    tiles = rng.normal(size=(size * size, 2, 3, 2, 3))
    forward = np.sum(winograd.input_tiles(image, (0, 3), (0, 2), m=m) * tiles)
    image_grad = np.zeros_like(image)
    winograd.input_tiles_transposed(tiles, image_grad, (0, 0), (0, 0), m=m)
    assert np.isclose(forward, np.sum(image * image_grad), rtol=1e-12)
    grad = rng.normal(size=(2, 3 * m - 1, 2 * m - 1, 3))
    out = np.empty_like(grad)
    winograd.output_tiles(tiles, np.zeros(2), out, (0, 0), m=m)
    assert np.isclose(np.sum(out * grad), np.sum(tiles * winograd.output_tiles_transposed(grad, (0, 3), (0, 2), m=m)), rtol=1e-12)


@pytest.mark.parametrize("m", TILES)
@pytest.mark.parametrize("row_chunks, chunks", [(None, "each row"), (2, "pairs"), (10**6, "one")])
def test_chunks_of_tile_rows_give_the_products_of_one_chunk(monkeypatch, rng, m, row_chunks, chunks):
    """One tile row per chunk (CHUNK_BYTES 1), two (the last chunk maybe one row, in buffers of
    its own) and all rows in one chunk give the window matrix's products."""
    row_bytes = (m + 2) ** 2 * (4 + 5) * -(-6 // m) * 3 * 8  # a tile row below: P x (C + O) x TW x N float64s
    monkeypatch.setattr(winograd, "CHUNK_BYTES", 1 if row_chunks is None else row_chunks * row_bytes)
    x = rng.normal(size=(3, 4, 9, 6))
    weight, grad = rng.normal(size=(1, 5, 36)), rng.normal(size=(1, 5, 9 * 6 * 3))
    geometry = _geometry(9, 6, 1)
    tiles = winograd.WinogradWindows(x, geometry[2], geometry[4], m)
    tile_rows = -(-9 // m)
    assert len(tiles._chunks(5)) == {"each row": tile_rows, "pairs": -(-tile_rows // 2), "one": 1}[chunks]
    reference = conv.WindowMatrix(x, *geometry, 1)
    np.testing.assert_allclose(tiles.matmul(weight), reference.matmul(weight), rtol=1e-11, atol=1e-11)
    for got, expected in zip(tiles.gradients(weight, grad, True), reference.gradients(weight, grad, True)):
        np.testing.assert_allclose(got, expected, rtol=1e-11, atol=1e-11)


WINOGRAD = ("WinogradWindows2", "WinogradWindows4")


def _windows_kind(x, out_channels, kernel=3, stride=1, padding=1, groups=1):
    """The window object's class name, and its tile for Winograd."""
    layer = nn.Conv2d(x.shape[1], out_channels, kernel, stride=stride, padding=padding, groups=groups,
                      dtype=xb.dtype_name(x.dtype), xp=None if isinstance(x, np.ndarray) else "array_api_strict")
    layer(x)
    name = type(layer._windows).__name__
    return f"{name}{layer._windows.m}" if name == "WinogradWindows" else name


def test_conv2d_takes_winograd_only_where_it_pays(monkeypatch):
    """NumPy, 3x3, stride 1, undilated, one group, float32/64, >= WINOGRAD_MIN_CHANNELS channels
    in and out, >= WINOGRAD_MIN_PIXELS output pixels: F(4x4, 3x3) for an output that whole 4x4
    tiles cover with at most WINOGRAD4_MAX_WASTE times its pixels (odd sizes too), else
    F(2x2, 3x3) for an even one, and with WINOGRAD_TILE 2 for any even one; anything else: im2col
    (a window matrix, whole or streamed)."""
    c = conv.WINOGRAD_MIN_CHANNELS
    n = -(-conv.WINOGRAD_MIN_PIXELS // 4)  # enough for a 2x2 output

    def images(h, w, channels=c, dtype=np.float32):
        return np.zeros((n, channels, h, w), dtype=dtype)

    x = images(8, 8)
    assert _windows_kind(x, c) == "WinogradWindows4"
    assert _windows_kind(images(10, 10, dtype=np.float64), c, padding=0) == "WinogradWindows4"  # 8x8
    assert _windows_kind(images(7, 8), c) == "WinogradWindows4"  # 7x8: 8x8 tiles, 1.14 times the pixels
    assert _windows_kind(images(14, 14), c) == "WinogradWindows4"  # 16x16 tiles, 1.31 times
    assert _windows_kind(images(6, 6), c) == "WinogradWindows2"  # 8x8 tiles, 1.78 times: 2x2 tiles instead
    assert _windows_kind(images(4, 6), c, padding=0) == "WinogradWindows2"  # a 2x4 output
    assert _windows_kind(images(5, 6), c, padding=0) not in WINOGRAD  # 3x4: odd, and too wasteful for 4x4 tiles
    assert _windows_kind(images(5, 5), c) not in WINOGRAD  # 5x5: odd, 8x8 tiles 2.56 times
    assert _windows_kind(x, c - 1) not in WINOGRAD
    assert _windows_kind(images(8, 8, channels=c - 1), c) not in WINOGRAD
    few = (conv.WINOGRAD_MIN_PIXELS - 1) // 64  # an 8x8 output of one pixel fewer, at most
    assert _windows_kind(np.zeros((few, c, 8, 8), np.float32), c) not in WINOGRAD
    assert _windows_kind(x, c, stride=2) not in WINOGRAD
    assert _windows_kind(x, c, kernel=5, padding=2) not in WINOGRAD
    assert _windows_kind(x, c, groups=2) not in WINOGRAD
    assert _windows_kind(x.astype(np.float16), c) not in WINOGRAD
    assert _windows_kind(array_api_strict.asarray(x), c) not in WINOGRAD
    monkeypatch.setattr(conv, "WINOGRAD_TILE", 2)
    assert _windows_kind(x, c) == "WinogradWindows2"
    assert _windows_kind(images(7, 8), c) == "WindowMatrix"  # odd output height


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("shape, out, padding, expected", [
    ((2, 3, 4, 4), 4, 1, {2: 2, 4: 4}),
    ((1, 2, 6, 4), 3, 0, {2: 2, 4: 2}),  # a 4x2 output: too narrow for 4x4 tiles
    ((3, 2, 7, 8), 2, 1, {2: None, 4: 4}),  # odd 7x8: F(4x4, 3x3) crops its tiles, F(2x2, 3x3) leaves it to im2col
    ((2, 2, 6, 6), 2, 1, {2: 2, 4: 2}),  # 6x6: 4x4 tiles would compute 1.78 times the pixels
])
def test_conv2d_through_winograd_passes_the_gradient_check(monkeypatch, rng, tile, shape, out, padding, expected):
    """With the channel and pixel thresholds lowered to 1 and the few-output paths (direct,
    streamed) off, small float64 Conv2d layers run through Winograd with the tile the door picks
    and their input and parameter gradients match finite differences; forward and backward equal
    those of the window matrix."""
    monkeypatch.setattr(conv, "WINOGRAD_TILE", tile)
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
    assert getattr(layer._windows, "m", None) == expected[tile]
    assert type(layer._windows) is (conv.WindowMatrix if expected[tile] is None else winograd.WinogradWindows)
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

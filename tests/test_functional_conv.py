"""im2col / col2im / window helpers: against a loop over output pixels, adjointness, layout, errors."""

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import functional as F
from xpnn.ops import windows as W
from xpnn.errors import ShapeError

# (input shape, kernel, stride, padding, dilation): square and non-square kernels and inputs,
# strides that do not divide the input, padding, dilation and 1x1 kernels.
GEOMETRIES = [
    ((2, 3, 5, 5), 3, 1, 0, 1),
    ((2, 3, 5, 5), 3, 1, 1, 1),
    ((1, 2, 7, 6), (2, 3), (2, 1), (1, 0), 1),
    ((2, 1, 8, 7), 3, 2, 1, 2),
    ((1, 2, 6, 9), (3, 2), (3, 2), (0, 1), (1, 2)),
    ((2, 2, 4, 3), 1, 1, 0, 1),
    ((1, 1, 5, 5), 5, 1, 2, 1),
]


def pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def reference_im2col(x, kernel_size, stride, padding, dilation):
    """One row per output pixel (n, oh, ow), the window's (c, kh, kw) elements in order."""
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = map(pair, (kernel_size, stride, padding, dilation))
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    rows = []
    for b in range(n):
        for i in range(oh):
            for j in range(ow):
                window = padded[b, :, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
                rows.append(window.reshape(-1))
    return np.array(rows)


@pytest.mark.parametrize("shape, k, s, p, d", GEOMETRIES)
def test_im2col_matches_pixel_loop(backend, rng, shape, k, s, p, d):
    x = rng.normal(size=shape)
    cols = F.im2col(backend.asarray(x), k, s, p, d)
    expected = reference_im2col(x, k, s, p, d)
    assert tuple(cols.shape) == expected.shape
    assert cols.dtype == backend.xp.float64
    np.testing.assert_array_equal(xb.to_numpy(cols), expected)


@pytest.mark.parametrize("shape, k, s, p, d", GEOMETRIES)
def test_col2im_is_the_adjoint_of_im2col(backend, rng, shape, k, s, p, d):
    x = rng.normal(size=shape)
    cols_shape = reference_im2col(x, k, s, p, d).shape
    c = rng.normal(size=cols_shape)
    lhs = float(np.sum(xb.to_numpy(F.im2col(backend.asarray(x), k, s, p, d)) * c))
    back = F.col2im(backend.asarray(c), shape, k, s, p, d)
    assert tuple(back.shape) == shape and back.dtype == backend.xp.float64
    rhs = float(np.sum(x * xb.to_numpy(back)))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, k, s, p, d", GEOMETRIES)
def test_numba_col2im_equals_portable_col2im_bit_for_bit(rng, shape, k, s, p, d, dtype):
    from xpnn.kernels import numba_windows

    (kh, kw), stride, (ph, pw), dilation, (oh, ow) = W.window_geometry(shape, k, s, p, d)
    n, c, h, w = shape
    blocks = rng.normal(size=(c, kh, kw, oh, ow, n)).astype(dtype)
    fast = numba_windows.col2im_image(blocks, (h + 2 * ph, w + 2 * pw), stride, dilation)
    slow = W.col2im_image_portable(blocks, (h + 2 * ph, w + 2 * pw), stride, dilation)
    assert fast.dtype == dtype and fast.shape == tuple(slow.shape)
    np.testing.assert_array_equal(fast, slow)


@pytest.mark.parametrize("shape, k, s, p, d", GEOMETRIES)
def test_compiled_im2col_rows_equals_the_portable_copies_for_every_row_range(rng, shape, k, s, p, d):
    from xpnn.kernels import numba_windows

    (kh, kw), stride, padding, dilation, (oh, ow) = W.window_geometry(shape, k, s, p, d)
    n, c = shape[:2]
    image = W.padded_batch_last(rng.normal(size=shape), padding)
    for start in range(oh):
        for stop in range(start + 1, oh + 1):
            fast = numba_windows.im2col_rows(image, np.empty((c, kh, kw, stop - start, ow, n)), start, stride, dilation)
            slow = W.im2col_rows_portable(image, (kh, kw), stride, dilation, (start, stop), ow, np.empty_like(fast))
            np.testing.assert_array_equal(fast, slow)


def test_col2im_adds_overlapping_windows(backend):
    # Each input pixel receives one 1 per window covering it: the coverage count.
    ones = F.col2im(backend.asarray(np.ones((9, 9))), (1, 1, 5, 5), 3)
    coverage = np.outer([1, 2, 3, 2, 1], [1, 2, 3, 2, 1])
    np.testing.assert_array_equal(xb.to_numpy(ones)[0, 0], coverage)


def test_im2col_keeps_float32(backend, rng):
    x = backend.asarray(rng.normal(size=(2, 3, 6, 5)), np.float32)
    cols = F.im2col(x, 3, padding=1)
    assert cols.dtype == backend.xp.float32 and tuple(cols.shape) == (2 * 6 * 5, 27)


@pytest.mark.parametrize("shape, k, s, p, d", GEOMETRIES)
def test_im2col_batch_last_is_im2col_with_the_batch_innermost(backend, rng, shape, k, s, p, d):
    x = rng.normal(size=shape)
    expected = reference_im2col(x, k, s, p, d)  # rows (n, oh, ow)
    n = shape[0]
    by_pixel = expected.reshape(n, -1, expected.shape[1]).transpose(2, 1, 0).reshape(expected.shape[1], -1)
    cols = W.im2col_batch_last(backend.asarray(x), k, s, p, d)
    np.testing.assert_array_equal(xb.to_numpy(cols), by_pixel)
    if xb.is_numpy(backend.xp):
        assert cols.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("shape, k, s, p, d", GEOMETRIES)
def test_col2im_batch_last_is_the_adjoint_of_im2col_batch_last(backend, rng, shape, k, s, p, d):
    x = rng.normal(size=shape)
    cols = xb.to_numpy(W.im2col_batch_last(backend.asarray(x), k, s, p, d))
    c = rng.normal(size=cols.shape)
    image = W.col2im_batch_last(backend.asarray(c), shape, k, s, p, d)
    n, ch, h, w = shape
    assert tuple(image.shape) == (ch, h, w, n)
    np.testing.assert_allclose(float(np.sum(cols * c)), float(np.sum(x.transpose(1, 2, 3, 0) * xb.to_numpy(image))), rtol=1e-12)


def test_im2col_batch_last_reads_a_batch_last_input_in_place(rng):
    # A conv output feeding the next conv without padding is used as it is, not copied first.
    x = np.ascontiguousarray(rng.normal(size=(3, 5, 5, 2))).transpose(3, 0, 1, 2)
    assert W.padded_batch_last(x, (0, 0)).base is x.base
    assert W.padded_batch_last(np.ascontiguousarray(x), (0, 0)).flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(W.im2col_batch_last(x, 3), W.im2col_batch_last(np.ascontiguousarray(x), 3))


def test_col2im_batch_last_rejects_wrong_cols_shape(backend):
    with pytest.raises(ShapeError, match=r"col2im: expected cols of shape \(9, 50\) for x_shape \(2, 1, 5, 5\), got \(50, 9\)"):
        W.col2im_batch_last(backend.asarray(np.zeros((50, 9))), (2, 1, 5, 5), 3, padding=1)


def test_im2col_matches_torch_unfold(rng):
    torch = pytest.importorskip("torch")
    for shape, k, s, p, d in GEOMETRIES:
        x = rng.normal(size=shape)
        unfolded = torch.nn.functional.unfold(torch.from_numpy(x), k, dilation=d, padding=p, stride=s).numpy()
        expected = unfolded.transpose(0, 2, 1).reshape(-1, unfolded.shape[1])
        np.testing.assert_array_equal(F.im2col(x, k, s, p, d), expected)


@pytest.mark.parametrize("args, expected", [
    ((28, 3, 1, 1), 28),
    ((28, 5), 24),
    ((7, 3, 2), 3),
    ((7, 3, 2, 1, 2), 3),
    ((6, 3, 2, 0, 2), 1),
    (((28, 20), (3, 5), 2, (1, 0)), (14, 8)),
    ((2, 5), -2),
])
def test_conv_output_size(args, expected):
    assert F.conv_output_size(*args) == expected


def test_window_slices_cover_each_offset():
    slices = W.window_slices((2, 3), (2, 1), (1, 2), (3, 4))
    assert [(i, j) for i, j, _ in slices] == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]
    assert slices[5][2] == (slice(1, 6, 2), slice(4, 8, 1))


def test_pad2d(backend):
    x = backend.asarray(np.arange(6.0).reshape(1, 2, 3), np.float32)
    padded = W.pad2d(x, (1, 2), value=-1.0)
    assert tuple(padded.shape) == (1, 4, 7) and padded.dtype == backend.xp.float32
    out = xb.to_numpy(padded)
    np.testing.assert_array_equal(out[0, 1:3, 2:5], np.arange(6.0).reshape(2, 3))
    assert out[0, 0, 0] == -1 and out[0, 3, 6] == -1
    assert W.pad2d(x, 0) is x


def test_im2col_rejects_non_4d(backend):
    with pytest.raises(ShapeError, match=r"im2col: expected a 4-D \(N, C, H, W\) input, got shape \(3, 5, 5\)"):
        F.im2col(backend.asarray(np.zeros((3, 5, 5))), 3)


def test_im2col_rejects_kernel_larger_than_padded_input(backend):
    with pytest.raises(ShapeError, match=r"im2col: kernel of size \(5, 5\) \(dilated\) is larger than the padded input \(4, 6\) "
                                          r"\(input shape \(1, 1, 2, 4\), padding \(1, 1\)\)"):
        F.im2col(backend.asarray(np.zeros((1, 1, 2, 4))), 3, padding=1, dilation=2)


def test_col2im_rejects_wrong_cols_shape(backend):
    with pytest.raises(ShapeError, match=r"col2im: expected cols of shape \(50, 9\) for x_shape \(2, 1, 5, 5\), got \(50, 8\)"):
        F.col2im(backend.asarray(np.zeros((50, 8))), (2, 1, 5, 5), 3, padding=1)


@pytest.mark.parametrize("value, message", [
    (0, r"im2col: expected kernel_size to be a positive int or a pair of them, got 0"),
    ((3, 3, 3), r"im2col: expected kernel_size to be a positive int or a pair of them, got \(3, 3, 3\)"),
    (2.5, r"im2col: expected kernel_size to be a positive int or a pair of them, got 2.5"),
])
def test_im2col_rejects_bad_geometry(value, message):
    with pytest.raises(ValueError, match=message):
        F.im2col(np.zeros((1, 1, 5, 5)), value)
    with pytest.raises(ValueError, match=r"im2col: expected padding to be a non-negative int or a pair of them, got -1"):
        F.im2col(np.zeros((1, 1, 5, 5)), 3, padding=-1)


GPU_GEOMETRIES = [
    dict(kernel_size=3, stride=1, padding=1, dilation=1),
    dict(kernel_size=(2, 3), stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
    dict(kernel_size=5, stride=3, padding=2, dilation=1),
]


@pytest.mark.parametrize("geometry", GPU_GEOMETRIES)
def test_cupy_kernels_equal_the_portable_loops(geometry):
    cupy = pytest.importorskip("cupy")
    try:
        xb.resolve("cuda")
    except Exception as exc:
        pytest.skip(f"no GPU: {exc}")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 4, 11, 9)).astype(np.float32)
    x_gpu = cupy.asarray(x).transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3)  # a permuted view, as convs chain
    cols = F.im2col(x_gpu, **geometry)
    np.testing.assert_array_equal(cupy.asnumpy(cols), F.im2col(x, **geometry))
    grad = rng.normal(size=tuple(cols.shape)).astype(np.float32)
    image = F.col2im(cupy.asarray(grad), x.shape, **geometry)
    np.testing.assert_allclose(cupy.asnumpy(image), F.col2im(grad, x.shape, **geometry), rtol=1e-5, atol=1e-5)

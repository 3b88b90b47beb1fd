"""MaxPool2d, AvgPool2d, AdaptiveAvgPool2d: against loops over output pixels, finite-difference
gradients, parity across backends, errors, and (when installed) torch.nn.functional."""

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ShapeError

from gradcheck import check_layer

# (input shape, kernel, stride, padding): stride None (= kernel), non-square kernels and inputs,
# strides that do not divide the input, overlapping windows, padding.
GRID = [
    ((2, 3, 6, 6), 2, None, 0),
    ((2, 2, 7, 5), 3, 2, 1),
    ((1, 2, 5, 8), (2, 3), (1, 2), (1, 0)),
    ((2, 1, 9, 7), (3, 2), None, (1, 1)),
    ((1, 2, 4, 4), 1, 2, 0),
]


def pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def windows(x, kernel, stride, padding, dilation=1, fill=0.0):
    """Yield (n, c, i, j, window) by loops over output pixels of the padded input."""
    (kh, kw), (ph, pw), (dh, dw) = map(pair, (kernel, padding, dilation))
    sh, sw = pair(kernel if stride is None else stride)
    n, c, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=fill)
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    for b in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    yield b, ch, i, j, padded[b, ch, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw], (oh, ow)


def reference_pool(x, kernel, stride, padding, reduce, dilation=1, fill=0.0):
    out = None
    for b, ch, i, j, window, (oh, ow) in windows(x, kernel, stride, padding, dilation, fill):
        if out is None:
            out = np.zeros((x.shape[0], x.shape[1], oh, ow))
        out[b, ch, i, j] = reduce(window)
    return out


def reference_adaptive(x, size):
    n, c, h, w = x.shape
    oh, ow = size
    out = np.zeros((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            hs, he = (i * h) // oh, -(-((i + 1) * h) // oh)
            ws, we = (j * w) // ow, -(-((j + 1) * w) // ow)
            out[:, :, i, j] = x[:, :, hs:he, ws:we].mean(axis=(2, 3))
    return out


def distinct(rng, shape):
    """Values at least 0.01 apart, so finite differences never change which element is the max."""
    return rng.permutation(np.prod(shape)).reshape(shape) * 0.01 - 0.3


@pytest.mark.parametrize("shape, k, s, p", GRID + [((2, 2, 8, 7), 2, 1, 1)])
def test_maxpool_matches_loop(backend, rng, shape, k, s, p):
    x = rng.normal(size=shape)
    y = nn.MaxPool2d(k, s, p)(backend.asarray(x))
    expected = reference_pool(x, k, s, p, np.max, fill=-np.inf)
    assert tuple(y.shape) == expected.shape and y.dtype == backend.xp.float64
    np.testing.assert_array_equal(xb.to_numpy(y), expected)


def test_maxpool_dilation_matches_loop(backend, rng):
    x = rng.normal(size=(1, 2, 9, 8))
    y = nn.MaxPool2d(3, 2, 1, dilation=2)(backend.asarray(x))
    np.testing.assert_array_equal(xb.to_numpy(y), reference_pool(x, 3, 2, 1, np.max, dilation=2, fill=-np.inf))


@pytest.mark.parametrize("shape, k, s, p", GRID)
def test_avgpool_matches_loop(backend, rng, shape, k, s, p):
    x = rng.normal(size=shape)
    y = nn.AvgPool2d(k, s, p)(backend.asarray(x))
    expected = reference_pool(x, k, s, p, np.mean)
    assert tuple(y.shape) == expected.shape and y.dtype == backend.xp.float64
    np.testing.assert_allclose(xb.to_numpy(y), expected, rtol=1e-12, atol=1e-15)


def test_avgpool_without_padding_in_the_count(backend, rng):
    x = rng.normal(size=(2, 2, 5, 6))
    layer = nn.AvgPool2d(3, 2, 1, count_include_pad=False)
    padded_mask = reference_pool(np.ones_like(x), 3, 2, 1, np.sum)
    expected = reference_pool(x, 3, 2, 1, np.sum) / padded_mask
    np.testing.assert_allclose(xb.to_numpy(layer(backend.asarray(x))), expected, rtol=1e-12)
    check_layer(layer, rng.normal(size=(1, 2, 5, 4)), backend, rng)


@pytest.mark.parametrize("size, shape", [(1, (2, 3, 5, 4)), ((1, 1), (2, 2, 3, 3)), (3, (1, 2, 7, 5)),
                                         ((2, 4), (2, 1, 5, 7)), ((None, 2), (1, 2, 3, 5)), (4, (1, 1, 4, 4))])
def test_adaptive_avgpool_matches_pytorch_windows(backend, rng, size, shape):
    x = rng.normal(size=shape)
    y = nn.AdaptiveAvgPool2d(size)(backend.asarray(x))
    target = tuple(shape[2 + i] if v is None else v for i, v in enumerate(pair(size)))
    expected = reference_adaptive(x, target)
    assert tuple(y.shape) == expected.shape and y.dtype == backend.xp.float64
    np.testing.assert_allclose(xb.to_numpy(y), expected, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.MaxPool2d(2), (2, 2, 4, 5)),
    (lambda: nn.MaxPool2d(3, 2, 1), (1, 2, 5, 6)),
    (lambda: nn.MaxPool2d((2, 3), (1, 2), (1, 0), dilation=(1, 2)), (1, 2, 4, 7)),
    (lambda: nn.AvgPool2d(2), (2, 2, 4, 5)),
    (lambda: nn.AvgPool2d((3, 2), (2, 1), (1, 1)), (1, 2, 5, 4)),
    (lambda: nn.AdaptiveAvgPool2d(1), (2, 3, 3, 4)),
    (lambda: nn.AdaptiveAvgPool2d((2, 3)), (2, 2, 5, 4)),
])
def test_pool_gradients(backend, rng, make, shape):
    check_layer(make(), distinct(rng, shape), backend, rng)


def test_maxpool_gradient_goes_to_the_first_maximum(backend):
    x = backend.asarray(np.ones((1, 1, 2, 4)), np.float32)
    layer = nn.MaxPool2d(2)
    layer(x)
    grad = xb.to_numpy(layer.backward(backend.asarray(np.array([[[[3.0, 5.0]]]]), np.float32)))
    np.testing.assert_array_equal(grad[0, 0], [[3, 0, 5, 0], [0, 0, 0, 0]])


def reference_maxpool_grad(x, kernel, stride, padding, up):
    """Gradient of max pooling by loops: each window's upstream value goes to its first maximum, or
    to its last NaN (PyTorch's rule)."""
    ph, pw = pair(padding)
    sh, sw = pair(kernel if stride is None else stride)
    grad = np.zeros(np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))).shape)
    for b, ch, i, j, window, _ in windows(x, kernel, stride, padding, fill=-np.inf):
        nans = np.flatnonzero(np.isnan(window))
        r, c = np.unravel_index(nans[-1] if nans.size else np.argmax(window), window.shape)
        grad[b, ch, i * sh + r, j * sw + c] += up[b, ch, i, j]
    return grad[:, :, ph:ph + x.shape[2], pw:pw + x.shape[3]]


@pytest.mark.parametrize("kernel", [2, 3, (2, 3), (1, 2)])
@pytest.mark.parametrize("order", [(0, 1, 2, 3), (1, 0, 2, 3), (1, 2, 3, 0), (0, 2, 3, 1), (2, 3, 0, 1)])
def test_maxpool_tiled_windows_with_ties_match_loops(backend, rng, kernel, order):
    """Windows that tile the input take the reshaped W-then-H path; many ties check the
    first-maximum rule, and inputs stored in other memory orders (batch-last, as Conv2d returns
    them; channel-major; channels-last; one the fast path does not read in place) the views."""
    kh, kw = pair(kernel)
    x = rng.integers(0, 3, size=(3, 2, 2 * kh, 3 * kw)).astype(np.float64)
    up = rng.normal(size=(3, 2, 2, 3))
    inverse = tuple(order.index(axis) for axis in range(4))
    on_device = backend.xp.permute_dims(backend.asarray(np.ascontiguousarray(x.transpose(order))), inverse)
    layer = nn.MaxPool2d(kernel)
    y = layer(on_device)
    np.testing.assert_array_equal(xb.to_numpy(y), reference_pool(x, kernel, None, 0, np.max))
    if xb.is_numpy(backend.xp) and order != (2, 3, 0, 1):  # the output keeps the input's memory order
        assert y.transpose(order).flags.c_contiguous
    grad = layer.backward(backend.asarray(up))
    assert tuple(grad.shape) == x.shape
    np.testing.assert_array_equal(xb.to_numpy(grad), reference_maxpool_grad(x, kernel, None, 0, up))


@pytest.mark.parametrize("kernel", [2, 3, (2, 3), (1, 2)])
def test_maxpool_compiled_tiles_with_ties_and_nan_match_loops(rng, kernel, monkeypatch):
    """A batch-last input with a long batch run takes the compiled NumPy loop: first maximum among
    ties; NaN as the maximum of its tile, taking the gradient (the last NaN)."""
    kh, kw = pair(kernel)
    x = rng.integers(0, 3, size=(20, 2, 2 * kh, 3 * kw)).astype(np.float64)
    x[3, 1, 0, kw - 1] = np.nan
    x[3, 1, kh - 1, 0] = np.nan
    up = rng.normal(size=(20, 2, 2, 3))
    from xpnn.ops import pooling

    def not_this_path(*args):
        raise AssertionError("a batch-last input with a long batch run should take the compiled loop")

    monkeypatch.setattr(pooling, "max_pool2d_tiles_portable", not_this_path)
    layer = nn.MaxPool2d(kernel)
    y = layer(np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2))
    expected = reference_pool(x, kernel, None, 0, np.max)
    np.testing.assert_array_equal(y, expected)
    assert np.isnan(y[3, 1, 0, 0])
    np.testing.assert_array_equal(layer.backward(up), reference_maxpool_grad(x, kernel, None, 0, up))


@pytest.mark.parametrize("shape, k, s, p", GRID)
def test_maxpool_gradient_with_ties_matches_loops(backend, rng, shape, k, s, p):
    x = rng.integers(0, 3, size=shape).astype(np.float64)
    layer = nn.MaxPool2d(k, s, p)
    y = layer(backend.asarray(x))
    up = rng.normal(size=tuple(y.shape))
    np.testing.assert_array_equal(xb.to_numpy(layer.backward(backend.asarray(up))), reference_maxpool_grad(x, k, s, p, up))


def test_maxpool_propagates_nan_and_gives_it_the_gradient(backend, rng):
    x = np.arange(36.0).reshape(1, 1, 6, 6)
    x[0, 0, 0, 1] = x[0, 0, 1, 0] = x[0, 0, 2, 3] = np.nan
    for layer in (nn.MaxPool2d(2), nn.MaxPool2d(3), nn.MaxPool2d(2, stride=1)):
        y = xb.to_numpy(layer(backend.asarray(x)))
        assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, -1, -1])
        up = rng.normal(size=y.shape)
        grad = xb.to_numpy(layer.backward(backend.asarray(up)))
        k, s = layer.kernel_size[0], layer.stride[0]
        np.testing.assert_array_equal(grad, reference_maxpool_grad(x, k, s, 0, up))


def test_maxpool_nan_gradient_matches_torch(rng):
    torch = pytest.importorskip("torch")
    x = rng.integers(0, 3, size=(20, 2, 6, 6)).astype(np.float64)
    x[rng.random(x.shape) < 0.1] = np.nan
    for batch_last in (False, True):
        for k, s in ((2, None), (3, 1)):
            layer = nn.MaxPool2d(k, s)
            tx = torch.tensor(x, requires_grad=True)
            ty = torch.nn.functional.max_pool2d(tx, k, s)
            up = rng.normal(size=tuple(ty.shape))
            ty.backward(torch.from_numpy(up))
            given = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2) if batch_last else x
            np.testing.assert_array_equal(layer(given), ty.detach().numpy())
            np.testing.assert_allclose(layer.backward(up), tx.grad.numpy(), rtol=1e-12, atol=1e-15)  # overlaps add in another order


def test_maxpool_overlapping_windows_add_gradients(backend):
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 1, 1] = 1.0  # the max of all four 2x2 windows
    layer = nn.MaxPool2d(2, stride=1)
    layer(backend.asarray(x))
    grad = xb.to_numpy(layer.backward(backend.asarray(np.ones((1, 1, 2, 2)))))
    assert grad[0, 0, 1, 1] == 4 and grad.sum() == 4


@pytest.mark.parametrize("make", [lambda: nn.MaxPool2d(3, 2, 1), lambda: nn.AvgPool2d(2), lambda: nn.AdaptiveAvgPool2d((2, 3))])
def test_pool_parity_with_numpy_float32(backend, rng, make):
    x = rng.normal(size=(2, 3, 7, 6)).astype(np.float32)
    ref_layer, layer = make(), make()
    y_ref = ref_layer(x)
    up = rng.normal(size=tuple(y_ref.shape)).astype(np.float32)
    g_ref = ref_layer.backward(up)
    y = layer(backend.asarray(x, np.float32))
    g = layer.backward(backend.asarray(up, np.float32))
    assert y.dtype == backend.xp.float32 and g.dtype == backend.xp.float32
    np.testing.assert_allclose(xb.to_numpy(y), y_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(xb.to_numpy(g), g_ref, rtol=1e-5, atol=1e-6)


def test_pools_match_torch(rng):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x = rng.normal(size=(2, 3, 9, 7))
    up_cases = [
        (nn.MaxPool2d(3, 2, 1), lambda t: tf.max_pool2d(t, 3, 2, 1)),
        (nn.MaxPool2d((2, 3), (1, 2), (1, 1), dilation=(2, 1)), lambda t: tf.max_pool2d(t, (2, 3), (1, 2), (1, 1), dilation=(2, 1))),
        (nn.AvgPool2d(3, 2, 1), lambda t: tf.avg_pool2d(t, 3, 2, 1)),
        (nn.AvgPool2d(3, 2, 1, count_include_pad=False), lambda t: tf.avg_pool2d(t, 3, 2, 1, count_include_pad=False)),
        (nn.AdaptiveAvgPool2d(1), lambda t: tf.adaptive_avg_pool2d(t, 1)),
        (nn.AdaptiveAvgPool2d((4, 3)), lambda t: tf.adaptive_avg_pool2d(t, (4, 3))),
        (nn.AdaptiveAvgPool2d((None, 5)), lambda t: tf.adaptive_avg_pool2d(t, (None, 5))),
    ]
    for layer, reference in up_cases:
        tx = torch.tensor(x, requires_grad=True)
        ty = reference(tx)
        up = rng.normal(size=tuple(ty.shape))
        ty.backward(torch.from_numpy(up))
        np.testing.assert_allclose(layer(x), ty.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=repr(layer))
        np.testing.assert_allclose(layer.backward(up), tx.grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=repr(layer))


def test_pool_reprs():
    assert repr(nn.MaxPool2d(2)) == "MaxPool2d(kernel_size=2, stride=2, padding=0, dilation=1)"
    assert repr(nn.AvgPool2d(3, 2, 1)) == "AvgPool2d(kernel_size=3, stride=2, padding=1)"
    assert repr(nn.AdaptiveAvgPool2d((1, 1))) == "AdaptiveAvgPool2d(output_size=(1, 1))"


@pytest.mark.parametrize("make, name", [(lambda: nn.MaxPool2d(2), r"MaxPool2d\(kernel_size=2, stride=2\)"),
                                        (lambda: nn.AvgPool2d(2), r"AvgPool2d\(kernel_size=2, stride=2\)"),
                                        (lambda: nn.AdaptiveAvgPool2d(1), r"AdaptiveAvgPool2d\(output_size=1\)")])
def test_pools_reject_non_4d(backend, make, name):
    with pytest.raises(ShapeError, match=name + r": expected a 4-D \(N, C, H, W\) input, got shape \(3, 8, 8\)"):
        make()(backend.asarray(np.zeros((3, 8, 8)), np.float32))


def test_pool_rejects_kernel_larger_than_input(backend):
    with pytest.raises(ShapeError, match=r"MaxPool2d\(kernel_size=3, stride=3\): kernel of size \(3, 3\) \(dilated\) is larger than "
                                          r"the padded input \(2, 5\) \(input shape \(1, 1, 2, 5\), padding \(0, 0\)\)"):
        nn.MaxPool2d(3)(backend.asarray(np.zeros((1, 1, 2, 5)), np.float32))


def test_pool_rejects_bad_arguments():
    with pytest.raises(ValueError, match=r"MaxPool2d: expected padding at most half the kernel size \(2, 2\), got padding=2"):
        nn.MaxPool2d(2, padding=2)
    with pytest.raises(ValueError, match=r"AvgPool2d: expected kernel_size to be a positive int or a pair of them, got 0"):
        nn.AvgPool2d(0)
    with pytest.raises(ValueError, match=r"AdaptiveAvgPool2d: expected output_size to be a positive int, None or a pair of them, got 0"):
        nn.AdaptiveAvgPool2d(0)

"""MaxPool1d and AvgPool1d: the 2-D pools over a 1-high image; against those and loops, finite-
difference gradients, parity across backends, errors, config, and (when installed) torch."""

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ConfigError, ShapeError

from gradcheck import check_layer
from test_conv1d import check_against_torch, check_parity_with_numpy

# (input shape, kernel, stride, padding, dilation): stride None (= kernel), strides that do not
# divide the input, overlapping windows, padding, dilation.
GRID = [
    ((2, 3, 8), 2, None, 0, 1),
    ((2, 2, 9), 3, 2, 1, 1),
    ((1, 2, 10), 3, 1, 1, 2),
    ((2, 1, 7), 4, 3, 2, 1),
    ((1, 2, 4), 1, 2, 0, 1),
]


def reference_pool1d(x, kernel, stride, padding, dilation, reduce, fill):
    stride = kernel if stride is None else stride
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding)), constant_values=fill)
    out_len = (x.shape[2] + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1
    return np.stack([reduce(padded[:, :, i * stride:i * stride + dilation * (kernel - 1) + 1:dilation]) for i in range(out_len)], axis=2)


def distinct(rng, shape):
    """Values at least 0.01 apart, so finite differences never change which element is the max."""
    return rng.permutation(np.prod(shape)).reshape(shape) * 0.01 - 0.3


@pytest.mark.parametrize("shape, k, s, p, d", GRID)
def test_maxpool1d_matches_loop_and_maxpool2d(backend, rng, shape, k, s, p, d):
    x = rng.normal(size=shape)
    pool = nn.MaxPool1d(k, s, p, d)
    y = pool(backend.asarray(x))
    np.testing.assert_array_equal(xb.to_numpy(y), reference_pool1d(x, k, s, p, d, lambda w: w.max(axis=2), -np.inf))
    up = rng.normal(size=tuple(y.shape))
    grad = pool.backward(backend.asarray(up))
    twin = nn.MaxPool2d((1, k), (1, k if s is None else s), (0, p), (1, d))
    twin(backend.asarray(x[:, :, None, :]))
    np.testing.assert_array_equal(xb.to_numpy(grad), xb.to_numpy(twin.backward(backend.asarray(up[:, :, None, :])))[:, :, 0, :])


@pytest.mark.parametrize("shape, k, s, p, d", [case for case in GRID if case[4] == 1])
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avgpool1d_matches_loop_and_avgpool2d(backend, rng, shape, k, s, p, d, count_include_pad):
    x = rng.normal(size=shape)
    pool = nn.AvgPool1d(k, s, p, count_include_pad=count_include_pad)
    y = pool(backend.asarray(x))
    total = reference_pool1d(x, k, s, p, 1, lambda w: w.sum(axis=2), 0.0)
    count = reference_pool1d(np.ones_like(x), k, s, p, 1, lambda w: w.sum(axis=2), 0.0)
    np.testing.assert_allclose(xb.to_numpy(y), total / (k if count_include_pad else count), rtol=1e-12, atol=1e-14)
    up = rng.normal(size=tuple(y.shape))
    grad = pool.backward(backend.asarray(up))
    twin = nn.AvgPool2d((1, k), (1, k if s is None else s), (0, p), count_include_pad=count_include_pad)
    twin(backend.asarray(x[:, :, None, :]))
    np.testing.assert_array_equal(xb.to_numpy(grad), xb.to_numpy(twin.backward(backend.asarray(up[:, :, None, :])))[:, :, 0, :])


@pytest.mark.parametrize("make", [lambda: nn.MaxPool1d(3, 2, 1), lambda: nn.MaxPool1d(2, 1, dilation=2),
                                  lambda: nn.AvgPool1d(3, 2, 1), lambda: nn.AvgPool1d(3, 2, 1, count_include_pad=False)])
def test_pool1d_gradients(backend, rng, make):
    check_layer(make(), distinct(rng, (2, 3, 9)), backend, rng)


@pytest.mark.parametrize("make", [lambda: nn.MaxPool1d(3, 2, 1), lambda: nn.AvgPool1d(2)])
def test_pool1d_parity_with_numpy_float32(backend, rng, make):
    check_parity_with_numpy(lambda dev: make(), rng.normal(size=(2, 3, 11)).astype(np.float32), backend, rng)


def test_pool1d_match_torch(rng):
    torch = pytest.importorskip("torch")
    tf = torch.nn.functional
    x = rng.normal(size=(2, 3, 13))
    cases = [
        (nn.MaxPool1d(3, 2, 1), lambda t: tf.max_pool1d(t, 3, 2, 1)),
        (nn.MaxPool1d(2), lambda t: tf.max_pool1d(t, 2)),
        (nn.MaxPool1d(3, 1, 1, dilation=2), lambda t: tf.max_pool1d(t, 3, 1, 1, dilation=2)),
        (nn.AvgPool1d(3, 2, 1), lambda t: tf.avg_pool1d(t, 3, 2, 1)),
        (nn.AvgPool1d(4, 3, 2, count_include_pad=False), lambda t: tf.avg_pool1d(t, 4, 3, 2, count_include_pad=False)),
    ]
    for layer, reference in cases:
        check_against_torch(torch, layer, reference, x, rng, repr(layer), rtol=1e-12, atol=1e-14)


def test_pool1d_reprs_and_config_round_trip():
    assert repr(nn.MaxPool1d(2)) == "MaxPool1d(kernel_size=2, stride=2, padding=0, dilation=1)"
    assert repr(nn.AvgPool1d(3, 2, 1)) == "AvgPool1d(kernel_size=3, stride=2, padding=1)"
    for layer in (nn.MaxPool1d(3, 2, 1, dilation=2), nn.AvgPool1d(4, None, 2, count_include_pad=False)):
        config = layer.get_config()
        assert config["class"] == type(layer).__name__
        assert repr(nn.from_config(config)) == repr(layer)


@pytest.mark.parametrize("make, name", [(lambda: nn.MaxPool1d(2), r"MaxPool1d\(kernel_size=2, stride=2\)"),
                                        (lambda: nn.AvgPool1d(2), r"AvgPool1d\(kernel_size=2, stride=2\)")])
def test_pool1d_reject_wrong_rank(backend, make, name):
    with pytest.raises(ShapeError, match=name + r": expected a 3-D \(N, C, L\) input, got shape \(3, 1, 8, 8\)"):
        make()(backend.asarray(np.zeros((3, 1, 8, 8)), np.float32))
    with pytest.raises(ShapeError, match=name + r": expected a 3-D \(N, C, L\) input, got shape \(8,\)"):
        make()(backend.asarray(np.zeros(8), np.float32))


def test_pool1d_reject_kernel_larger_than_input(backend):
    with pytest.raises(ShapeError, match=r"MaxPool1d\(kernel_size=3, stride=1\): kernel of size 5 \(dilated\) is larger than "
                                          r"the padded input 4 \(input shape \(1, 1, 4\), padding 0\)"):
        nn.MaxPool1d(3, 1, dilation=2)(backend.asarray(np.zeros((1, 1, 4)), np.float32))
    with pytest.raises(ShapeError, match=r"AvgPool1d\(kernel_size=4, stride=4\): kernel of size 4 \(dilated\) is larger than "
                                          r"the padded input 3 \(input shape \(1, 1, 3\), padding 0\)"):
        nn.AvgPool1d(4)(backend.asarray(np.zeros((1, 1, 3)), np.float32))


def test_pool1d_reject_bad_arguments():
    with pytest.raises(ConfigError, match=r"MaxPool1d: expected padding at most half the kernel size 2, got padding=2"):
        nn.MaxPool1d(2, padding=2)
    with pytest.raises(ConfigError, match=r"AvgPool1d: expected kernel_size to be a positive int or a tuple of one, got 0"):
        nn.AvgPool1d(0)
    with pytest.raises(ConfigError, match=r"MaxPool1d: expected stride to be a positive int or a tuple of one, got \(2, 2\)"):
        nn.MaxPool1d(2, stride=(2, 2))
    with pytest.raises(ConfigError, match=r"AvgPool1d: expected padding to be a non-negative int or a tuple of one, got -1"):
        nn.AvgPool1d(2, padding=-1)

"""Upsample: nearest and bilinear against PyTorch (outputs and gradients), gradient checks on every
backend, the batch-last layout, parity with NumPy float32, and errors."""

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ConfigError, DTypeError, ShapeError

from gradcheck import check_layer

TORCH_CASES = [
    dict(scale_factor=2), dict(scale_factor=3), dict(scale_factor=(2, 1)), dict(size=(8, 11)), dict(size=4),
    dict(scale_factor=1.5), dict(scale_factor=(0.5, 2.3)), dict(scale_factor=1.7, recompute_scale_factor=True),
    dict(size=(10, 14), mode="bilinear"), dict(size=4, mode="bilinear"), dict(scale_factor=2, mode="bilinear"),
    dict(scale_factor=1.7, mode="bilinear", align_corners=True), dict(scale_factor=(3, 0.6), mode="bilinear", align_corners=False),
    dict(size=(1, 1), mode="bilinear", align_corners=True), dict(scale_factor=1.7, mode="bilinear", recompute_scale_factor=True),
]
GRAD_CASES = [dict(scale_factor=2), dict(size=(5, 7)), dict(scale_factor=(1.5, 0.7)), dict(scale_factor=2, mode="bilinear"),
              dict(size=(4, 9), mode="bilinear", align_corners=True)]


def _id(kwargs):
    return "-".join(f"{k}={v}" for k, v in kwargs.items())


@pytest.mark.parametrize("kwargs", TORCH_CASES, ids=_id)
def test_matches_torch(rng, kwargs):
    torch = pytest.importorskip("torch")
    layer, reference = nn.Upsample(**kwargs), torch.nn.Upsample(**kwargs)
    x = rng.normal(size=(2, 3, 5, 7))
    xt = torch.tensor(x, requires_grad=True)
    yt = reference(xt)
    up = rng.normal(size=tuple(yt.shape))
    yt.backward(torch.from_numpy(up))
    y = layer(x)
    assert y.shape == tuple(yt.shape)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.backward(up), xt.grad.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs", GRAD_CASES, ids=_id)
def test_gradients(backend, rng, kwargs):
    check_layer(nn.Upsample(**kwargs), rng.normal(size=(2, 2, 3, 4)), backend, rng)


@pytest.mark.parametrize("kwargs", GRAD_CASES, ids=_id)
def test_parity_with_numpy_float32(backend, rng, kwargs):
    x = rng.normal(size=(3, 2, 4, 5)).astype(np.float32)
    found = []
    for device in ("cpu", backend.device):
        layer = nn.Upsample(**kwargs)
        xp, place = xb.resolve(device), xb.resolve_device(device)
        y = layer(xb.asarray(x, xp, None, place))
        g = layer.backward(xb.asarray(np.ones(tuple(y.shape), np.float32), xp, None, place))
        assert y.dtype == g.dtype == xp.float32 and tuple(g.shape) == x.shape
        found.append((xb.to_numpy(y), xb.to_numpy(g)))
    for ref, got in zip(*found):
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6)


def test_nearest_values_and_gradient_sums_copies(backend):
    x = np.arange(6.0).reshape(1, 1, 2, 3)
    layer = nn.Upsample(scale_factor=2)
    y = layer(backend.asarray(x))
    np.testing.assert_array_equal(xb.to_numpy(y)[0, 0], np.repeat(np.repeat(x[0, 0], 2, axis=0), 2, axis=1))
    grad = layer.backward(backend.xp.ones(tuple(y.shape), dtype=y.dtype, device=backend.place))
    np.testing.assert_array_equal(xb.to_numpy(grad), np.full(x.shape, 4.0))


def test_takes_a_batch_last_convolution_output(backend, rng):
    conv = nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64, xp=backend.device)
    y = conv(backend.asarray(rng.normal(size=(2, 2, 4, 5))))
    copied = backend.asarray(xb.to_numpy(y).copy())
    for kwargs in GRAD_CASES:
        layer = nn.Upsample(**kwargs)
        out_view = xb.to_numpy(layer(y))
        up = backend.asarray(rng.normal(size=out_view.shape))
        grad_view = xb.to_numpy(layer.backward(up))
        np.testing.assert_allclose(out_view, xb.to_numpy(layer(copied)), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(grad_view, xb.to_numpy(layer.backward(up)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kwargs, message", [
    (dict(scale_factor=2, mode="bicubic"), r"Upsample: expected mode to be one of nearest, bilinear, got 'bicubic'"),
    (dict(), r"Upsample: expected exactly one of size and scale_factor, got size=None, scale_factor=None"),
    (dict(size=4, scale_factor=2), r"Upsample: expected exactly one of size and scale_factor, got size=4, scale_factor=2"),
    (dict(scale_factor=2, align_corners=True), r"Upsample: align_corners can only be set with mode='bilinear'"),
    (dict(size=0), r"Upsample: expected size to be a positive int or a pair of them, got 0"),
    (dict(size=(2, 3, 4)), r"Upsample: expected size .* got \(2, 3, 4\)"),
    (dict(size=2.5), r"Upsample: expected size .* got 2.5"),
    (dict(scale_factor=0), r"Upsample: expected scale_factor to be a positive number or a pair of them, got 0"),
    (dict(scale_factor=(2, -1)), r"Upsample: expected scale_factor .* got \(2, -1\)"),
    (dict(scale_factor=float("inf")), r"Upsample: expected scale_factor .* got inf"),
    (dict(scale_factor="2"), r"Upsample: expected scale_factor .* got '2'"),
])
def test_bad_construction(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        nn.Upsample(**kwargs)


@pytest.mark.parametrize("layer, shape, dtype, error, message", [
    (nn.Upsample(scale_factor=2), (2, 3, 4), "float32", ShapeError, r"Upsample\(scale_factor=2, mode='nearest'\): expected a 4-D \(N, C, H, W\) input, got shape \(2, 3, 4\)"),
    (nn.Upsample(size=3, mode="bilinear"), (3, 4), "float32", ShapeError, r"Upsample\(size=3, mode='bilinear'\): expected a 4-D"),
    (nn.Upsample(scale_factor=2), (1, 1, 2, 2), "int64", DTypeError, r"Upsample\(scale_factor=2, mode='nearest'\): expected a floating input, got dtype int64"),
    (nn.Upsample(scale_factor=0.2), (1, 1, 4, 9), "float32", ShapeError, r"Upsample\(scale_factor=0.2, mode='nearest'\): an input of 4x9 pixels scales to 0x1, expected at least 1x1"),
])
def test_bad_input(backend, rng, layer, shape, dtype, error, message):
    with pytest.raises(error, match=message):
        layer(backend.asarray(rng.normal(size=shape).astype(dtype)))

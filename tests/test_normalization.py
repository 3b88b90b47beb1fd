"""LayerNorm and GroupNorm: values against a float64 reference, gradients (input and parameters)
on every backend, parity with NumPy float32, PyTorch's outputs and gradients, and errors."""

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ConfigError, DTypeError, ShapeError

from gradcheck import check_layer

LAYER_NORM_CASES = [(4, (3, 4)), ((4,), (2, 3, 4)), ((3, 4), (2, 3, 4)), ([2, 3, 2], (2, 2, 3, 2)), ((5,), (5,))]
GROUP_NORM_CASES = [(2, 4, (3, 4)), (2, 4, (2, 4, 5)), (3, 6, (2, 6, 3, 2)), (1, 3, (2, 3, 2, 2)), (3, 3, (2, 3, 4))]


def reference_layer_norm(x, k, weight, bias, eps=1e-5):
    axes = tuple(range(x.ndim - k, x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    return y * (1 if weight is None else weight) + (0 if bias is None else bias)


def reference_group_norm(x, groups, weight, bias, eps=1e-5):
    g = x.reshape(x.shape[0], groups, -1)
    y = ((g - g.mean(axis=2, keepdims=True)) / np.sqrt(g.var(axis=2, keepdims=True) + eps)).reshape(x.shape)
    channel = (1, -1) + (1,) * (x.ndim - 2)
    return y * weight.reshape(channel) + bias.reshape(channel) if weight is not None else y


def _random_affine(layer, be, rng):
    """Random weight and bias (where the layer has them), in float64 on ``be``; their host copies."""
    found = []
    for name in ("weight", "bias"):
        param = getattr(layer, name)
        if param is None:
            found.append(None)
            continue
        host = rng.uniform(0.5, 1.5, size=param.shape) if name == "weight" else rng.normal(size=param.shape)
        param.data = be.asarray(host, np.float64)
        found.append(host)
    return found


@pytest.mark.parametrize("shape_arg, shape", LAYER_NORM_CASES)
def test_layer_norm_values(backend, rng, shape_arg, shape):
    layer = nn.LayerNorm(shape_arg, dtype=np.float64, xp=backend.device)
    weight, bias = _random_affine(layer, backend, rng)
    x = rng.normal(loc=1.0, scale=2.0, size=shape)
    k = 1 if isinstance(shape_arg, int) else len(shape_arg)
    for mode in (True, False):  # no running statistics: the same in both modes
        y = layer.train(mode)(backend.asarray(x))
        np.testing.assert_allclose(xb.to_numpy(y), reference_layer_norm(x, k, weight, bias), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("groups, channels, shape", GROUP_NORM_CASES)
def test_group_norm_values(backend, rng, groups, channels, shape):
    layer = nn.GroupNorm(groups, channels, dtype=np.float64, xp=backend.device)
    weight, bias = _random_affine(layer, backend, rng)
    x = rng.normal(loc=1.0, scale=2.0, size=shape)
    for mode in (True, False):
        y = layer.train(mode)(backend.asarray(x))
        np.testing.assert_allclose(xb.to_numpy(y), reference_group_norm(x, groups, weight, bias), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("shape_arg, shape", LAYER_NORM_CASES)
@pytest.mark.parametrize("kwargs", [{}, {"bias": False}, {"elementwise_affine": False}, {"eps": 0.1}])
def test_layer_norm_gradients(backend, rng, shape_arg, shape, kwargs):
    layer = nn.LayerNorm(shape_arg, **kwargs)
    _random_affine(layer, backend, rng)
    check_layer(layer, rng.normal(size=shape), backend, rng)
    names = [n for n, _ in layer.named_parameters()]
    assert names == {"bias": ["weight"], "elementwise_affine": []}.get(next(iter(kwargs), None), ["weight", "bias"])


@pytest.mark.parametrize("groups, channels, shape", GROUP_NORM_CASES)
@pytest.mark.parametrize("affine", [True, False])
def test_group_norm_gradients(backend, rng, groups, channels, shape, affine):
    layer = nn.GroupNorm(groups, channels, affine=affine)
    _random_affine(layer, backend, rng)
    check_layer(layer, rng.normal(size=shape), backend, rng)
    assert [n for n, _ in layer.named_parameters()] == (["weight", "bias"] if affine else [])


def test_group_norm_takes_a_batch_last_convolution_output(backend, rng):
    """A Conv2d output is an NCHW view of a batch-last buffer; GroupNorm gives what it gives for a copy."""
    conv = nn.Conv2d(2, 4, 3, padding=1, dtype=np.float64, xp=backend.device)
    norm = nn.GroupNorm(2, 4, dtype=np.float64, xp=backend.device)
    _random_affine(norm, backend, rng)
    y = conv(backend.asarray(rng.normal(size=(3, 2, 5, 5))))
    copied = backend.asarray(xb.to_numpy(y).copy())
    up = backend.asarray(rng.normal(size=(3, 4, 5, 5)))
    out_view, grad_view = xb.to_numpy(norm(y)), xb.to_numpy(norm.backward(up))
    out_copy, grad_copy = xb.to_numpy(norm(copied)), xb.to_numpy(norm.backward(up))
    np.testing.assert_allclose(out_view, out_copy, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(grad_view, grad_copy, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("make, shape", [(lambda d: nn.LayerNorm((3, 4), xp=d), (5, 3, 4)), (lambda d: nn.GroupNorm(2, 6, xp=d), (4, 6, 3, 5))])
def test_parity_with_numpy_float32(backend, rng, make, shape):
    x = rng.normal(size=shape).astype(np.float32)
    up = rng.normal(size=shape).astype(np.float32)
    outputs = []
    for device in ("cpu", backend.device):
        layer = make(device)
        y = layer(xb.asarray(x, layer.xp, None, layer.device))
        g = layer.backward(xb.asarray(up, layer.xp, None, layer.device))
        assert y.dtype == g.dtype == layer.weight.grad.dtype == layer.xp.float32
        outputs.append([xb.to_numpy(a) for a in (y, g, layer.weight.grad, layer.bias.grad)])
    for ref, got in zip(*outputs):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_gradients_accumulate_and_eval_changes_nothing(rng):
    layer = nn.LayerNorm(3, dtype=np.float64)
    x, up = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    layer(x)
    layer.backward(up)
    first = layer.weight.grad.copy()
    layer.eval()(x)
    layer.backward(up)
    np.testing.assert_allclose(layer.weight.grad, 2 * first, rtol=1e-12)
    assert list(layer.state_dict()) == ["weight", "bias"]  # no buffers


@pytest.mark.parametrize("case", [
    ("layer", (4,), dict(), (3, 4)), ("layer", (3, 4), dict(), (2, 3, 4)), ("layer", (2, 3, 2), dict(eps=1e-3), (2, 2, 3, 2)),
    ("layer", (4,), dict(elementwise_affine=False), (3, 4)), ("layer", (4,), dict(bias=False), (3, 4)),
    ("group", (2, 4), dict(), (3, 4)), ("group", (2, 4), dict(), (3, 4, 5)), ("group", (3, 6), dict(eps=1e-3), (2, 6, 3, 2)),
    ("group", (3, 6), dict(affine=False), (2, 6, 3, 2)),
], ids=lambda c: f"{c[0]}-{c[1]}-{c[3]}-{'-'.join(c[2])}")
def test_matches_torch(rng, case):
    torch = pytest.importorskip("torch")
    kind, args, kwargs, shape = case
    if kind == "layer":
        layer = nn.LayerNorm(args, dtype=np.float64, **kwargs)
        reference = torch.nn.LayerNorm(args, dtype=torch.float64, **kwargs)
    else:
        layer = nn.GroupNorm(*args, dtype=np.float64, **kwargs)
        reference = torch.nn.GroupNorm(*args, dtype=torch.float64, **kwargs)
    params = [n for n, _ in layer.named_parameters()]
    assert params == [n for n, _ in reference.named_parameters()]
    for name in params:
        value = rng.normal(size=getattr(layer, name).shape)
        getattr(layer, name).data = value.copy()
        with torch.no_grad():
            getattr(reference, name).copy_(torch.from_numpy(value))
    x, up = rng.normal(loc=0.5, scale=2.0, size=shape), rng.normal(size=shape)
    xt = torch.tensor(x, requires_grad=True)
    yt = reference(xt)
    yt.backward(torch.from_numpy(up))
    np.testing.assert_allclose(layer(x), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.backward(up), xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for name in params:
        np.testing.assert_allclose(getattr(layer, name).grad, getattr(reference, name).grad.numpy(), rtol=1e-10, atol=1e-11)
    # a PyTorch state_dict loads as it is
    layer.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})


@pytest.mark.parametrize("make, error, message", [
    (lambda: nn.LayerNorm(0), ConfigError, r"LayerNorm: expected normalized_shape to be a positive int or a non-empty tuple of them, got 0"),
    (lambda: nn.LayerNorm(()), ConfigError, r"normalized_shape .* got \(\)"),
    (lambda: nn.LayerNorm((3, -1)), ConfigError, r"normalized_shape .* got \(3, -1\)"),
    (lambda: nn.LayerNorm(2.5), ConfigError, r"normalized_shape .* got 2.5"),
    (lambda: nn.LayerNorm(3, eps=0), ConfigError, r"LayerNorm: expected eps > 0, got 0"),
    (lambda: nn.LayerNorm(3, dtype="int32"), DTypeError, r"LayerNorm: expected a floating dtype"),
    (lambda: nn.GroupNorm(3, 4), ConfigError, r"GroupNorm: expected num_channels \(4\) to be divisible by num_groups \(3\)"),
    (lambda: nn.GroupNorm(0, 4), ConfigError, r"GroupNorm: expected num_groups to be a positive int, got 0"),
    (lambda: nn.GroupNorm(2, True), ConfigError, r"GroupNorm: expected num_channels to be a positive int, got True"),
    (lambda: nn.GroupNorm(2, 4, eps=-1.0), ConfigError, r"GroupNorm: expected eps > 0, got -1.0"),
])
def test_bad_construction(make, error, message):
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("make, shape, dtype, error, message", [
    (lambda d: nn.LayerNorm(4, xp=d), (3, 5), "float32", ShapeError, r"LayerNorm\(\(4,\), eps=1e-05, elementwise_affine=True\): expected input of shape \(\*, 4\), got \(3, 5\)"),
    (lambda d: nn.LayerNorm((3, 4), xp=d), (4,), "float32", ShapeError, r"LayerNorm\(\(3, 4\).*expected input of shape \(\*, 3, 4\), got \(4,\)"),
    (lambda d: nn.LayerNorm(4, xp=d), (3, 4), "float64", DTypeError, r"LayerNorm\(\(4,\).*expected dtype float32, got float64"),
    (lambda d: nn.LayerNorm(4, elementwise_affine=False, xp=d), (3, 4), "int64", DTypeError, r"LayerNorm\(\(4,\).*expected a floating input, got dtype int64"),
    (lambda d: nn.GroupNorm(2, 4, xp=d), (3, 6, 2), "float32", ShapeError, r"GroupNorm\(2, 4, eps=1e-05, affine=True\): expected input of shape \(N, 4, \*\), got \(3, 6, 2\)"),
    (lambda d: nn.GroupNorm(2, 4, xp=d), (4,), "float32", ShapeError, r"GroupNorm\(2, 4.*expected input of shape \(N, 4, \*\), got \(4,\)"),
    (lambda d: nn.GroupNorm(2, 4, xp=d), (3, 4), "float64", DTypeError, r"GroupNorm\(2, 4.*expected dtype float32, got float64"),
    (lambda d: nn.GroupNorm(2, 4, affine=False, xp=d), (3, 4), "int32", DTypeError, r"GroupNorm\(2, 4.*expected a floating input, got dtype int32"),
])
def test_bad_input(backend, rng, make, shape, dtype, error, message):
    layer = make(backend.device)
    with pytest.raises(error, match=message):
        layer(backend.asarray(rng.normal(size=shape).astype(dtype)))


def test_wrong_backend_input_names_the_layer(rng):
    pytest.importorskip("array_api_strict")
    layer = nn.LayerNorm(4, xp="array_api_strict")
    with pytest.raises(Exception, match=r"LayerNorm\(\(4,\).*expected an array on array_api_strict"):
        layer(rng.normal(size=(2, 4)).astype(np.float32))

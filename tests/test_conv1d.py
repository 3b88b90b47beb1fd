"""Conv1d: the Conv2d code over a 1-pixel-high image; against Conv2d and a direct loop,
finite-difference gradients, init, parity across backends, errors, config, and (when installed)
torch.nn.functional.conv1d."""

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ConfigError, DTypeError, ShapeError

from gradcheck import check_layer

# (input shape, out_channels, kernel, stride, padding, dilation, groups)
GRID = [
    ((2, 3, 8), 4, 3, 1, 0, 1, 1),
    ((2, 3, 7), 2, 3, 1, 1, 1, 1),
    ((1, 2, 9), 3, 2, 2, 1, 1, 1),
    ((2, 1, 11), 2, 3, 2, 1, 2, 1),
    ((1, 4, 10), 6, 3, 3, 2, 2, 2),
    ((2, 4, 6), 4, 3, 1, 1, 1, 4),
    ((3, 3, 5), 5, 1, 1, 0, 1, 1),
    ((2, 2, 4), 2, 5, 1, 2, 1, 1),
]


def _conv(shape, out, k, s, p, d, g, device="cpu", dtype=None, bias=True, seed=11):
    return nn.Conv1d(shape[1], out, k, stride=s, padding=p, dilation=d, groups=g, bias=bias, dtype=dtype, xp=device,
                     generator=np.random.default_rng(seed))


def reference_conv1d(x, w, b, stride, padding, dilation, groups):
    """Float64 cross-correlation by loops over (n, out channel, position)."""
    n, _, length = x.shape
    o, cg, k = w.shape
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding)))
    out_len = (length + 2 * padding - dilation * (k - 1) - 1) // stride + 1
    og = o // groups
    out = np.zeros((n, o, out_len))
    for b_ in range(n):
        for oc in range(o):
            g = oc // og
            for i in range(out_len):
                window = padded[b_, g * cg:(g + 1) * cg, i * stride:i * stride + dilation * (k - 1) + 1:dilation]
                out[b_, oc, i] = np.sum(window * w[oc]) + (0.0 if b is None else b[oc])
    return out


@pytest.mark.parametrize("shape, out, k, s, p, d, g", GRID)
def test_conv1d_matches_direct_loop(backend, rng, shape, out, k, s, p, d, g):
    layer = _conv(shape, out, k, s, p, d, g, backend.device, np.float64)
    layer.bias.data = backend.asarray(rng.normal(size=out))
    x = rng.normal(size=shape)
    y = layer(backend.asarray(x))
    expected = reference_conv1d(x, xb.to_numpy(layer.weight.data), xb.to_numpy(layer.bias.data), s, p, d, g)
    assert tuple(y.shape) == expected.shape and y.dtype == backend.xp.float64
    np.testing.assert_allclose(xb.to_numpy(y), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, out, k, s, p, d, g", GRID)
def test_conv1d_is_conv2d_over_a_one_high_image(backend, rng, shape, out, k, s, p, d, g):
    """The same code: output and every gradient equal Conv2d's on the (N, C, 1, L) image, exactly."""
    one_d = _conv(shape, out, k, s, p, d, g, backend.device)
    two_d = nn.Conv2d(shape[1], out, (1, k), stride=(1, s), padding=(0, p), dilation=(1, d), groups=g, xp=backend.device)
    two_d.weight.data = backend.xp.reshape(one_d.weight.data, two_d.weight.shape)
    one_d.bias.data = two_d.bias.data = backend.asarray(rng.normal(size=out), np.float32)
    x = rng.normal(size=shape).astype(np.float32)
    y1 = one_d(backend.asarray(x))
    y2 = two_d(backend.asarray(x[:, :, None, :]))
    up = rng.normal(size=tuple(y1.shape)).astype(np.float32)
    g1 = one_d.backward(backend.asarray(up))
    g2 = two_d.backward(backend.asarray(up[:, :, None, :]))
    np.testing.assert_array_equal(xb.to_numpy(y1), xb.to_numpy(y2)[:, :, 0, :])
    np.testing.assert_array_equal(xb.to_numpy(g1), xb.to_numpy(g2)[:, :, 0, :])
    np.testing.assert_array_equal(xb.to_numpy(one_d.weight.grad), xb.to_numpy(two_d.weight.grad)[:, :, 0, :])
    np.testing.assert_array_equal(xb.to_numpy(one_d.bias.grad), xb.to_numpy(two_d.bias.grad))


@pytest.mark.parametrize("shape, out, k, s, p, d, g", [GRID[1], GRID[2], GRID[3], GRID[4], GRID[5], GRID[7]])
def test_conv1d_gradients(backend, rng, shape, out, k, s, p, d, g):
    layer = _conv(shape, out, k, s, p, d, g)
    layer.bias.data = rng.normal(size=out).astype(np.float32)
    check_layer(layer, rng.normal(size=shape), backend, rng)


def test_conv1d_without_bias_gradients(backend, rng):
    layer = _conv((2, 2, 7), 3, 3, 2, 1, 1, 1, bias=False)
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    check_layer(layer, rng.normal(size=(2, 2, 7)), backend, rng)


def check_against_torch(torch, layer, function, x, rng, where, rtol=1e-10, atol=1e-12):
    """A float64 NumPy ``layer`` against ``function(input, *parameters)`` in torch: the output,
    the input gradient and every parameter gradient for a random upstream gradient."""
    y = layer(x)
    up = rng.normal(size=tuple(y.shape))
    grads = [layer.backward(up)] + [p.grad for p in layer.parameters()]
    tensors = [torch.tensor(a, requires_grad=True) for a in [x] + [p.data for p in layer.parameters()]]
    ty = function(*tensors)
    ty.backward(torch.from_numpy(up))
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=rtol, atol=atol, err_msg=where)
    for got, tensor in zip(grads, tensors):
        np.testing.assert_allclose(got, tensor.grad.numpy(), rtol=rtol, atol=atol, err_msg=where)


def test_conv1d_matches_torch(rng):
    torch = pytest.importorskip("torch")
    for shape, out, k, s, p, d, g in GRID:
        layer = _conv(shape, out, k, s, p, d, g, dtype=np.float64)
        layer.bias.data = rng.normal(size=out)
        function = lambda x, w, b: torch.nn.functional.conv1d(x, w, b, stride=s, padding=p, dilation=d, groups=g)  # noqa: E731
        check_against_torch(torch, layer, function, rng.normal(size=shape), rng, f"{shape} k={k} s={s} p={p} d={d} g={g}")


def test_conv1d_weight_shape_init_and_backend_identity(backend):
    xpnn.manual_seed(5)
    on_backend = nn.Conv1d(16, 32, 5, groups=2, xp=backend.device)
    xpnn.manual_seed(5)
    on_numpy = nn.Conv1d(16, 32, 5, groups=2)
    assert on_backend.weight.shape == (32, 8, 5) and on_backend.bias.shape == (32,)
    assert on_backend.weight.dtype == backend.xp.float32 and on_backend.bias.dtype == backend.xp.float32
    np.testing.assert_array_equal(xb.to_numpy(on_backend.weight.data), on_numpy.weight.data)
    assert abs(float(np.std(on_numpy.weight.data)) - np.sqrt(2 / (8 * 5))) < 0.02
    assert float(np.abs(on_numpy.bias.data).max()) == 0.0
    assert on_numpy.kernel_size == (5,) and on_numpy.stride == (1,) and on_numpy.padding == (0,) and on_numpy.dilation == (1,)


def check_parity_with_numpy(make, x, backend, rng, rtol=1e-5, atol=1e-6):
    """``make(device)`` on NumPy and on ``backend`` in float32, from the same weights: the output,
    the input gradient and every parameter gradient agree (the new window layers' tests share it)."""
    results = []
    up = None
    for device in ("cpu", backend.device):
        layer = make(device)
        y = layer(backend.asarray(x, np.float32) if device != "cpu" else x)
        if up is None:
            up = rng.normal(size=tuple(y.shape)).astype(np.float32)
        gx = layer.backward(backend.asarray(up, np.float32) if device != "cpu" else up)
        assert y.dtype == x.dtype if device == "cpu" else (y.dtype == backend.xp.float32 and gx.dtype == backend.xp.float32)
        results.append([xb.to_numpy(a) for a in (y, gx, *(p.grad for p in layer.parameters()))])
    for ref, got, name in zip(*results, ("output", "input grad", "weight grad", "bias grad")):
        np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol, err_msg=name)


def test_conv1d_parity_with_numpy_float32(backend, rng):
    shape, out, k, s, p, d, g = GRID[4]
    check_parity_with_numpy(lambda dev: _conv(shape, out, k, s, p, d, g, dev), rng.normal(size=shape).astype(np.float32), backend, rng)


def test_conv1d_backward_params_gives_the_same_parameter_gradients(backend, rng):
    model = nn.Sequential(nn.Conv1d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(3, 4, 3), nn.Flatten(),
                          nn.Linear(4 * 2, 2)).to(backend.device)
    x = backend.asarray(rng.normal(size=(2, 2, 8)), np.float32)
    up = backend.asarray(rng.normal(size=(2, 2)), np.float32)
    grads = []
    for method in ("backward", "backward_params"):
        model.zero_grad()
        model(x)
        result = getattr(model, method)(up)
        assert (result is None) == (method == "backward_params")
        grads.append([xb.to_numpy(p.grad).copy() for p in model.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_conv1d_output_is_batch_last_and_chains(rng):
    """On NumPy a Conv1d output is an (N, C, L) view of an (C, L, N) buffer, as Conv2d's; the
    layers that follow keep that order, and results equal those of contiguous inputs."""
    model = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2), nn.Conv1d(4, 5, 3))
    x = rng.normal(size=(3, 2, 12)).astype(np.float32)
    h = reference = x
    for layer in model:
        h = layer(h)
        assert h.transpose(1, 2, 0).flags.c_contiguous, type(layer).__name__
        reference = np.ascontiguousarray(layer(reference))
        np.testing.assert_allclose(h, reference, rtol=1e-6, atol=1e-6)


def test_conv1d_repr_like_pytorch():
    assert repr(nn.Conv1d(1, 8, 3, padding=1)) == "Conv1d(1, 8, kernel_size=(3,), stride=(1,), padding=(1,))"
    assert repr(nn.Conv1d(4, 8, 5, stride=2, dilation=2, groups=2, bias=False)) == (
        "Conv1d(4, 8, kernel_size=(5,), stride=(2,), dilation=(2,), groups=2, bias=False)"
    )


def test_conv1d_config_round_trip():
    layer = nn.Conv1d(4, 6, (3,), stride=2, padding=1, dilation=2, groups=2, bias=False, dtype="float64")
    config = layer.get_config()
    assert config == {"class": "Conv1d", "args": {"in_channels": 4, "out_channels": 6, "kernel_size": [3], "stride": 2, "padding": 1,
                                                  "dilation": 2, "groups": 2, "bias": False, "init": "he", "dtype": "float64"}}
    rebuilt = nn.from_config(config)
    assert repr(rebuilt) == repr(layer) and rebuilt.weight.shape == (6, 2, 3) and rebuilt.weight.dtype == np.float64


def test_conv1d_rejects_non_3d(backend):
    layer = nn.Conv1d(1, 8, 3, xp=backend.device)
    with pytest.raises(ShapeError, match=r"Conv1d\(1, 8, kernel_size=\(3,\)\): expected a 3-D \(N, C, L\) input, got shape \(2, 1, 1, 28\)"):
        layer(backend.asarray(np.zeros((2, 1, 1, 28)), np.float32))
    with pytest.raises(ShapeError, match=r"expected a 3-D \(N, C, L\) input, got shape \(1, 28\)"):
        layer(backend.asarray(np.zeros((1, 28)), np.float32))


def test_conv1d_rejects_wrong_channel_count(backend):
    layer = nn.Conv1d(3, 8, 3, xp=backend.device)
    with pytest.raises(ShapeError, match=r"Conv1d\(3, 8, kernel_size=\(3,\)\): expected input of shape \(N, 3, L\), got \(2, 1, 28\)"):
        layer(backend.asarray(np.zeros((2, 1, 28)), np.float32))


def test_conv1d_rejects_kernel_larger_than_padded_input(backend):
    layer = nn.Conv1d(1, 2, 3, padding=1, dilation=3, xp=backend.device)
    with pytest.raises(ShapeError, match=r"Conv1d\(1, 2, kernel_size=\(3,\)\): kernel of size 7 \(dilated\) is larger than "
                                          r"the padded input 6 \(input shape \(1, 1, 4\), padding 1\)"):
        layer(backend.asarray(np.zeros((1, 1, 4)), np.float32))


def test_conv1d_rejects_bad_arguments():
    with pytest.raises(ConfigError, match=r"Conv1d: expected in_channels and out_channels divisible by groups=3, got in_channels=4, out_channels=6"):
        nn.Conv1d(4, 6, 3, groups=3)
    with pytest.raises(ConfigError, match=r"Conv1d: expected positive in_channels, out_channels and groups, got in_channels=0"):
        nn.Conv1d(0, 6, 3)
    with pytest.raises(ConfigError, match=r"Conv1d: expected stride to be a positive int or a tuple of one, got 0"):
        nn.Conv1d(1, 2, 3, stride=0)
    with pytest.raises(ConfigError, match=r"Conv1d: expected kernel_size to be a positive int or a tuple of one, got \(3, 3\)"):
        nn.Conv1d(1, 2, (3, 3))
    with pytest.raises(ConfigError, match=r"Conv1d: expected padding to be a non-negative int or a tuple of one, got -1"):
        nn.Conv1d(1, 2, 3, padding=-1)
    with pytest.raises(ConfigError, match=r"Conv1d: expected dilation to be a positive int or a tuple of one, got True"):
        nn.Conv1d(1, 2, 3, dilation=True)


def test_conv1d_rejects_float64_into_float32(backend):
    layer = nn.Conv1d(1, 2, 3, xp=backend.device)
    with pytest.raises(DTypeError, match=r"Conv1d\(1, 2, kernel_size=\(3,\)\): expected dtype float32, got float64"):
        layer(backend.asarray(np.zeros((1, 1, 5)), np.float64))

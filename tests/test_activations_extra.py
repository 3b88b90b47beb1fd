"""Issue 16's activations (ELU, SiLU, Softplus, Mish, Hardtanh, ReLU6, Hardswish, Softsign, PReLU):
float64 finite-difference gradients, values and gradients against PyTorch (kinks and large inputs
included), no overflow for the largest floats, and bad input with its message."""

import warnings

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ConfigError, DeviceError, DTypeError, ShapeError

from gradcheck import check_layer

# (xpnn layer, the same layer in torch.nn: built from torch's module by name and arguments)
LAYERS = [
    ("ELU", {}), ("ELU", dict(alpha=0.5)), ("SiLU", {}), ("Softplus", {}), ("Softplus", dict(beta=2.0, threshold=3.0)),
    ("Softplus", dict(beta=0.5, threshold=-1.0)), ("Mish", {}), ("Hardtanh", {}), ("Hardtanh", dict(min_val=-2.0, max_val=0.5)),
    ("ReLU6", {}), ("Hardswish", {}), ("Softsign", {}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in args.items())}" if args else name for name, args in LAYERS]
# Every kink of the layers above, where the one-sided derivatives differ: PyTorch's choice is checked there.
KINKS = [-3.0, -2.0, -1.0, 0.0, 0.5, 1.0, 1.5, 3.0, 6.0, -2.0, 10.0]
LARGE = [-1e30, -1e4, -750.0, -100.0, -40.0, -20.0, 20.0, 40.0, 100.0, 750.0, 1e4, 1e30]


def _make(name, args):
    return getattr(nn, name)(**args)


def _torch(name, args):
    torch = pytest.importorskip("torch")
    return getattr(torch.nn, name)(**args)


def _away_from_kinks(rng, shape):
    x = rng.normal(size=shape) * 3
    near = np.min(np.abs(x[..., None] - np.array(KINKS)), axis=-1) < 1e-3
    return np.where(near, 0.25, x)


@pytest.mark.parametrize("name, args", LAYERS, ids=IDS)
def test_gradients(backend, rng, name, args):
    check_layer(_make(name, args), _away_from_kinks(rng, (4, 3, 5)), backend, rng)


@pytest.mark.parametrize("shape, channels", [((4, 3, 5), 3), ((2, 3, 2, 3), 3), ((4, 3, 5), 1), ((5,), 1), ((), 1), ((2, 4), 4)])
def test_prelu_gradients(backend, rng, shape, channels):
    layer = nn.PReLU(channels, init=0.3)
    layer.weight.data = layer.xp.asarray(rng.uniform(-0.5, 0.5, size=channels), dtype=layer.xp.float32)
    check_layer(layer, _away_from_kinks(rng, shape), backend, rng)


def _compare_with_torch(backend, layer, module, x, dtype, rtol, atol):
    torch = pytest.importorskip("torch")
    grad = np.random.default_rng(3).normal(size=x.shape)
    y = layer(backend.asarray(x, dtype))
    gx = layer.backward(backend.asarray(grad, dtype))
    assert y.dtype == getattr(backend.xp, np.dtype(dtype).name) and gx.dtype == y.dtype
    tx = torch.tensor(x, dtype=getattr(torch, np.dtype(dtype).name), requires_grad=True)
    ty = module.to(tx.dtype)(tx)
    ty.backward(torch.tensor(grad, dtype=tx.dtype))
    np.testing.assert_allclose(xb.to_numpy(y), ty.detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(xb.to_numpy(gx), tx.grad.numpy(), rtol=rtol, atol=atol)
    return tx.grad


@pytest.mark.parametrize("dtype, rtol, atol", [(np.float64, 1e-12, 1e-15), (np.float32, 2e-6, 1e-7)])
@pytest.mark.parametrize("name, args", LAYERS, ids=IDS)
def test_matches_torch_at_kinks_and_large_inputs(backend, rng, name, args, dtype, rtol, atol):
    x = np.concatenate([rng.normal(size=40) * 4, KINKS, LARGE]).astype(dtype)
    _compare_with_torch(backend, _make(name, args).to(backend.device), _torch(name, args), x.reshape(3, -1), dtype, rtol, atol)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("channels, shape", [(1, (4, 3, 5)), (3, (4, 3, 5)), (3, (2, 3, 4, 4)), (1, (7,)), (4, (6, 4))])
def test_prelu_matches_torch(backend, rng, channels, shape, dtype, rtol):
    torch = pytest.importorskip("torch")
    x = rng.normal(size=shape) * 3
    x.reshape(-1)[:3] = [0.0, -1e30, 1e30]
    layer = nn.PReLU(channels, dtype=np.dtype(dtype).name, xp=backend.device)
    module = torch.nn.PReLU(channels)
    with torch.no_grad():
        module.weight.copy_(torch.tensor(rng.uniform(-0.5, 0.5, size=channels)))
    layer.load_state_dict({k: v.detach().numpy().astype(dtype) for k, v in module.state_dict().items()})
    _compare_with_torch(backend, layer, module, x.astype(dtype), dtype, rtol, 1e-30)
    np.testing.assert_allclose(xb.to_numpy(layer.weight.grad), module.weight.grad.numpy(), rtol=max(rtol, 1e-12) * 10)


def test_prelu_parameter_like_torch():
    torch = pytest.importorskip("torch")
    for channels in (1, 5):
        layer, module = nn.PReLU(channels), torch.nn.PReLU(channels)
        assert list(layer.state_dict()) == list(module.state_dict()) == ["weight"]
        np.testing.assert_array_equal(layer.state_dict()["weight"], module.weight.detach().numpy())
        assert layer.weight.data.dtype == np.float32
    assert nn.PReLU(2, init=-0.1).weight.data.tolist() == pytest.approx([-0.1, -0.1])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("name, args", LAYERS, ids=IDS)
def test_largest_floats_give_no_overflow(backend, name, args, dtype):
    """Inputs up to the dtype's largest value: finite outputs (the limits: x, 0, a bound) and
    finite gradients, and no NumPy warning."""
    if not hasattr(backend.xp, np.dtype(dtype).name):
        pytest.skip(f"{backend} has no {np.dtype(dtype).name}")
    big = float(np.finfo(dtype).max)
    x_host = np.array([-big, -big / 3, -1e4, 1e4, big / 3, big], dtype=dtype)
    layer = _make(name, args)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = xb.to_numpy(layer(backend.asarray(x_host)))
        g = xb.to_numpy(layer.backward(backend.asarray(np.ones(6, dtype=dtype))))
    assert y.dtype == dtype and np.all(np.isfinite(y)) and np.all(np.isfinite(g)), (y, g)
    lo, hi = {"ELU": (-args.get("alpha", 1.0), None), "Hardtanh": (args.get("min_val", -1.0), args.get("max_val", 1.0)),
              "ReLU6": (0.0, 6.0), "Softsign": (-1.0, 1.0)}.get(name, (0.0, None))
    x64 = x_host.astype(np.float64)
    expected = np.where(x64 > 0, x64 if hi is None else hi, lo)
    np.testing.assert_allclose(y[[0, 1, 4, 5]], expected[[0, 1, 4, 5]], rtol=1e-3)


def test_softplus_is_linear_above_threshold_exactly_as_torch(backend):
    torch = pytest.importorskip("torch")
    beta, threshold = 3.0, 20.0
    x = np.nextafter(np.float64(threshold / beta), [-np.inf, np.inf, 0.0, 100.0])
    x = np.concatenate([x, [threshold / beta, 7.0, 6.5]])
    grad = _compare_with_torch(backend, nn.Softplus(beta, threshold), torch.nn.Softplus(beta, threshold), x, np.float64, 1e-15, 0)
    assert set(grad.numpy().tolist()) - {1.0}  # both sides of the threshold were tested


def test_gradients_at_the_kinks_are_torchs(backend):
    """The exact derivative values at each kink (as PyTorch's kernels give them)."""
    x = backend.asarray(np.array([-3.0, 0.0, 3.0, 6.0, -1.0, 1.0]), np.float64)
    ones = backend.xp.ones_like(x)

    def grad(layer):
        layer(x)
        return xb.to_numpy(layer.backward(ones)).tolist()

    assert grad(nn.Hardswish()) == pytest.approx([0.0, 0.5, 1.0, 1.0, 1 / 6, 1 - 1 / 6], rel=1e-15, abs=0)
    assert grad(nn.ReLU6()) == [0.0, 0.0, 1.0, 0.0, 0.0, 1.0]
    assert grad(nn.Hardtanh()) == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    assert grad(nn.ELU(0.5))[1] == 0.5
    assert grad(nn.Softsign())[1] == 1.0
    prelu = nn.PReLU(init=0.25, dtype="float64", xp=backend.device)
    assert grad(prelu) == [0.25, 0.25, 1.0, 1.0, 0.25, 1.0]
    assert xb.to_numpy(prelu.weight.grad).tolist() == [-4.0]


def test_relu6_is_a_hardtanh():
    layer = nn.ReLU6()
    assert isinstance(layer, nn.Hardtanh) and (layer.min_val, layer.max_val) == (0.0, 6.0)
    assert repr(layer) == "ReLU6()" and layer.get_config() == {"class": "ReLU6", "args": {}}


@pytest.mark.parametrize("name, args", LAYERS + [("PReLU", {})], ids=IDS + ["PReLU"])
def test_float32_in_float32_out_and_nan_stays_nan(backend, name, args):
    layer = _make(name, args).to(backend.device)
    x = backend.asarray(np.array([[np.nan, 1.5, -0.5]]), np.float32)
    y = layer(x)
    assert y.dtype == backend.xp.float32 and tuple(y.shape) == (1, 3)
    assert np.isnan(xb.to_numpy(y)[0, 0])


@pytest.mark.parametrize("name, args", LAYERS, ids=IDS)
def test_rejects_integer_input_and_non_arrays(backend, name, args):
    layer = _make(name, args)
    shown = layer._name().replace("(", r"\(").replace(")", r"\)")
    with pytest.raises(DTypeError, match=rf"{shown}: expected a floating input \(float16, float32, float64\), got int64"):
        layer(backend.asarray(np.arange(4), np.int64))
    with pytest.raises(DeviceError, match=rf"{shown}: expected an array, got list"):
        layer([1.0, 2.0])


def test_prelu_rejects_bad_input(backend):
    layer = nn.PReLU(3, xp=backend.device)
    with pytest.raises(ShapeError, match=r"PReLU\(num_parameters=3\): expected an input with 3 channels in dimension 1, got shape \(2, 4, 5\)"):
        layer(backend.asarray(np.zeros((2, 4, 5)), np.float32))
    with pytest.raises(ShapeError, match=r"PReLU\(num_parameters=3\): expected an input with 3 channels in dimension 1, got shape \(3,\)"):
        layer(backend.asarray(np.zeros(3), np.float32))
    with pytest.raises(ShapeError, match=r"PReLU\(num_parameters=3\): expected an input with 3 channels in dimension 1, got a 0-d input"):
        layer(backend.asarray(np.zeros(()), np.float32))
    with pytest.raises(DTypeError, match=r"PReLU\(num_parameters=3\): expected dtype float32, got float64"):
        layer(backend.asarray(np.zeros((2, 3)), np.float64))
    with pytest.raises(DTypeError, match=r"PReLU\(num_parameters=3\): expected dtype float32, got int64"):
        layer(backend.asarray(np.zeros((2, 3)), np.int64))


def test_prelu_rejects_an_array_of_another_backend():
    with pytest.raises(DeviceError, match=r"PReLU\(num_parameters=1\): expected an array on array_api_strict, got numpy.ndarray"):
        nn.PReLU(xp="array_api_strict")(np.zeros(3, dtype=np.float32))


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Hardtanh(1.0, 1.0), "Hardtanh: expected max_val greater than min_val, got min_val=1.0, max_val=1.0"),
    (lambda: nn.Hardtanh(2, -2), "Hardtanh: expected max_val greater than min_val, got min_val=2.0, max_val=-2.0"),
    (lambda: nn.Hardtanh(max_val="1"), "Hardtanh: expected max_val to be a finite number, got '1'"),
    (lambda: nn.Softplus(beta=0), r"Softplus: expected beta > 0, got 0.0"),
    (lambda: nn.Softplus(beta=-1.0), r"Softplus: expected beta > 0, got -1.0"),
    (lambda: nn.Softplus(threshold=float("nan")), r"Softplus: expected threshold to be a finite number, got nan"),
    (lambda: nn.ELU(alpha=None), "ELU: expected alpha to be a finite number, got None"),
    (lambda: nn.ELU(alpha=True), "ELU: expected alpha to be a finite number, got True"),
    (lambda: nn.PReLU(0), "PReLU: expected num_parameters to be a positive int, got 0"),
    (lambda: nn.PReLU(2.0), "PReLU: expected num_parameters to be a positive int, got 2.0"),
    (lambda: nn.PReLU(init=float("inf")), "PReLU: expected init to be a finite number, got inf"),
    (lambda: nn.PReLU(dtype="int32"), r"PReLU: expected a floating dtype \(float16, float32, float64\), got int32"),
])
def test_bad_arguments_are_refused(make, message):
    with pytest.raises((ConfigError, DTypeError), match=message):
        make()


def test_config_round_trip_keeps_the_arguments():
    for layer in (nn.ELU(0.3), nn.Softplus(2.0, 5.0), nn.Hardtanh(-2.0, 3.0), nn.PReLU(4, init=0.1, dtype="float64")):
        rebuilt = nn.from_config(layer.get_config())
        assert repr(rebuilt) == repr(layer) and rebuilt.get_config() == layer.get_config()
    assert nn.from_config(nn.PReLU(4, dtype="float64").get_config()).weight.data.dtype == np.float64


def test_prelu_backward_params_accumulates_only_the_weight(backend, rng):
    layer = nn.PReLU(3, xp=backend.device)
    x = backend.asarray(rng.normal(size=(2, 3, 4)), np.float32)
    g = backend.asarray(rng.normal(size=(2, 3, 4)), np.float32)
    layer(x)
    layer.backward_params(g)
    first = xb.to_numpy(layer.weight.grad).copy()
    layer.backward(g)
    np.testing.assert_allclose(xb.to_numpy(layer.weight.grad), 2 * first, rtol=1e-6)

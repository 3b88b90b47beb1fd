"""Dense layers and activations: values, float64 finite-difference gradients, dtypes, bad input."""

import warnings

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ConfigError, DeviceError, DTypeError, ShapeError

from gradcheck import check_layer

ACTIVATIONS = [
    (nn.ReLU, lambda x: np.maximum(x, 0)),
    (lambda: nn.LeakyReLU(0.2), lambda x: np.where(x > 0, x, 0.2 * x)),
    (nn.Sigmoid, lambda x: 1 / (1 + np.exp(-x))),
    (nn.Tanh, np.tanh),
    (nn.GELU, None),
    (lambda: nn.GELU(approximate="tanh"), lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))),
    (nn.Softmax, lambda x: np.exp(x) / np.exp(x).sum(-1, keepdims=True)),
    (nn.LogSoftmax, lambda x: x - np.log(np.exp(x).sum(-1, keepdims=True))),
    (nn.Identity, lambda x: x),
    (nn.Flatten, lambda x: x.reshape(x.shape[0], -1)),
]


def _away_from_kinks(rng, shape):
    x = rng.normal(size=shape)
    return np.where(np.abs(x) < 1e-3, 0.5, x)


@pytest.mark.parametrize("make, reference", ACTIVATIONS)
def test_activation_gradients(backend, rng, make, reference):
    check_layer(make(), _away_from_kinks(rng, (4, 3, 5)), backend, rng)


@pytest.mark.parametrize("make, reference", [a for a in ACTIVATIONS if a[1] is not None])
def test_activation_values_and_dtype(backend, rng, make, reference):
    x = rng.normal(size=(4, 6)).astype(np.float32)
    y = make()(backend.asarray(x))
    assert y.dtype == backend.xp.float32
    np.testing.assert_allclose(xb.to_numpy(y), reference(x.astype(np.float64)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("make, slope", [(nn.ReLU, 0.0), (lambda: nn.LeakyReLU(0.2), 0.2)])
def test_rectifiers_are_exact_at_the_extremes(backend, make, slope):
    x = np.array([-np.inf, -3.5, -1e-30, 0.0, 1e-30, 2.25, np.inf, np.nan], dtype=np.float32)
    layer = make()
    y = xb.to_numpy(layer(backend.asarray(x)))
    expected = np.where(x > 0, x, x * np.float32(slope)) if slope else np.maximum(x, np.float32(0))
    np.testing.assert_array_equal(y, expected)
    grad = xb.to_numpy(layer.backward(backend.asarray(np.full(8, 3.0, dtype=np.float32))))
    np.testing.assert_array_equal(grad[:7], np.where(x[:7] > 0, 3.0, 3.0 * np.float32(slope)).astype(np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "batch-last", "strided", "float16"])
def test_relu_compiled_pass_equals_the_ufuncs(monkeypatch, rng, dtype, layout):
    """On NumPy ReLU makes its output and mask in one compiled pass over gap-free inputs, keeping
    their memory order; strided slices and float16 take the ufuncs. Same values either way (the
    size threshold lowered so that this small array takes the compiled pass)."""
    from xpnn.ops import activation

    monkeypatch.setattr(activation, "NUMBA_MIN_ELEMENTS", 1)

    x = rng.normal(size=(5, 3, 4, 6)).astype(dtype)
    x.reshape(-1)[:6] = [np.nan, -np.inf, np.inf, -0.0, 0.0, -1e-30]
    if layout == "batch-last":
        x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    elif layout == "strided":
        x = x[:, :, ::2]
    elif layout == "float16":
        x = x.astype(np.float16)
    compiled = layout not in ("strided", "float16")
    y_portable, backward_portable = activation.relu_portable(x)
    if compiled:
        y_compiled, backward_compiled = activation.relu_numba(x)
        np.testing.assert_array_equal(y_compiled, y_portable)
        assert y_compiled.strides == x.strides
        np.testing.assert_array_equal(backward_compiled(np.ones_like(x)), backward_portable(np.ones_like(x)))
        grad = rng.normal(size=x.shape).astype(dtype)
        grad.reshape(-1)[6:8] = [np.nan, np.inf]  # where the mask is 0 too: NaN * 0, as the portable multiply
        for g in (grad, np.ascontiguousarray(grad.transpose(3, 2, 1, 0)).transpose(3, 2, 1, 0)):  # x's layout, another
            got = backward_compiled(g)
            np.testing.assert_array_equal(got, backward_portable(g))
            assert got.strides == y_compiled.strides  # the gradient comes back in the forward's layout
    layer = nn.ReLU()
    y = layer(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    if layout == "batch-last":
        assert y.transpose(1, 2, 3, 0).flags.c_contiguous
    np.testing.assert_array_equal(layer.backward(np.ones_like(x)), (x > 0).astype(x.dtype))


def test_gelu_matches_exact_erf(backend):
    from math import erf, sqrt

    x = np.linspace(-6, 6, 97)
    exact = np.array([0.5 * v * (1 + erf(v / sqrt(2))) for v in x])
    y = nn.GELU()(backend.asarray(x))
    np.testing.assert_allclose(xb.to_numpy(y), exact, rtol=0, atol=3e-7)


def test_linear_gradients(backend, rng):
    xpnn.manual_seed(3)
    layer = nn.Linear(5, 4)
    check_layer(layer, rng.normal(size=(6, 5)), backend, rng)


def test_linear_accepts_leading_dimensions(backend, rng):
    xpnn.manual_seed(3)
    layer = nn.Linear(5, 4, xp=backend.device)
    check_layer(layer, rng.normal(size=(2, 3, 5)), backend, rng)


def test_linear_gradient_keeps_a_transposed_input_layout(rng):
    """A flattened batch-last conv output is the transpose of a C-contiguous buffer; the input
    gradient comes back in that memory order, with the same values."""
    layer = nn.Linear(6, 3, dtype=np.float64)
    x = rng.normal(size=(6, 4)).T
    up = rng.normal(size=(4, 3))
    layer(x)
    grad = layer.backward(up)
    assert grad.T.flags.c_contiguous
    np.testing.assert_allclose(grad, up @ layer.weight.data, rtol=1e-12)
    layer(np.ascontiguousarray(x))
    assert layer.backward(up).flags.c_contiguous


def test_linear_without_bias(backend, rng):
    layer = nn.Linear(3, 2, bias=False)
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    check_layer(layer, rng.normal(size=(4, 3)), backend, rng)


def test_linear_weight_layout_and_init_identical_across_backends(backend):
    xpnn.manual_seed(7)
    on_backend = nn.Linear(784, 256, xp=backend.device)
    xpnn.manual_seed(7)
    on_numpy = nn.Linear(784, 256)
    assert on_backend.weight.shape == (256, 784)  # (out, in), as PyTorch's
    assert on_backend.weight.dtype == backend.xp.float32
    np.testing.assert_array_equal(xb.to_numpy(on_backend.weight.data), on_numpy.weight.data)
    std = float(np.std(on_numpy.weight.data))
    assert abs(std - np.sqrt(2 / 784)) < 0.002


@pytest.mark.parametrize("init, expected_std", [("he", np.sqrt(2 / 400)), ("xavier", np.sqrt(2 / 600)), ("normal", 0.01)])
def test_linear_inits(init, expected_std):
    layer = nn.Linear(400, 200, init=init)
    assert abs(float(np.std(layer.weight.data)) - expected_std) < 0.05 * expected_std
    assert float(np.abs(layer.bias.data).max()) == 0.0


def test_unknown_init_is_rejected():
    with pytest.raises(ConfigError, match="init: expected one of he, xavier, normal, got 'glorot'"):
        nn.Linear(3, 2, init="glorot")


def test_float64_layer(backend, rng):
    layer = nn.Linear(3, 2, dtype=np.float64, xp=backend.device)
    y = layer(backend.asarray(rng.normal(size=(4, 3)), np.float64))
    assert layer.weight.dtype == backend.xp.float64 and y.dtype == backend.xp.float64


def test_float32_stays_float32_end_to_end(backend, rng):
    model = nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(), nn.Linear(5, 4), nn.GELU(), nn.Linear(4, 3)).to(backend.device)
    x = backend.asarray(rng.normal(size=(8, 6)), np.float32)
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(model(x), backend.asarray(np.arange(8) % 3))
    assert loss.dtype == backend.xp.float32
    gx = model.backward(loss_fn.backward())
    assert gx.dtype == backend.xp.float32
    assert all(p.grad.dtype == backend.xp.float32 for p in model.parameters())


def test_sigmoid_never_overflows():
    for dtype in (np.float32, np.float64):
        x = np.array([-1e4, -800.0, -100.0, 0.0, 100.0, 800.0, 1e4], dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            y = nn.Sigmoid()(x)
        assert np.all(np.isfinite(y)) and y[0] == 0 and y[-1] == 1 and y[3] == 0.5


def test_softmax_is_per_row(backend, rng):
    x = rng.normal(size=(5, 7)).astype(np.float32) * 10
    y = xb.to_numpy(nn.Softmax()(backend.asarray(x)))
    np.testing.assert_allclose(y.sum(axis=1), np.ones(5), rtol=1e-6)
    y0 = xb.to_numpy(nn.Softmax(dim=0)(backend.asarray(x)))
    np.testing.assert_allclose(y0.sum(axis=0), np.ones(7), rtol=1e-6)


def test_softmax_of_large_logits_is_finite(backend):
    x = backend.asarray(np.array([[1000.0, 0.0, -1000.0]]), np.float32)
    assert np.all(np.isfinite(xb.to_numpy(nn.Softmax()(x))))
    assert np.all(np.isfinite(xb.to_numpy(nn.LogSoftmax()(x))[0, :2]))


def test_dropout_gradients_and_modes(backend, rng):
    layer = nn.Dropout(0.4)
    check_layer(layer, rng.normal(size=(6, 5)), backend, rng, reseed=lambda: setattr(layer, "generator", np.random.default_rng(5)))
    layer.to(backend.device, dtype="float32")
    x = backend.asarray(np.ones((200, 50)), np.float32)
    y = xb.to_numpy(layer(x))
    kept = y != 0
    assert 0.5 < kept.mean() < 0.7
    np.testing.assert_allclose(y[kept], 1 / 0.6, rtol=1e-6)
    layer.eval()
    assert layer(x) is x


@pytest.mark.parametrize("threshold", [1, None])
def test_dropout_keeps_a_batch_last_input_layout_each_way(monkeypatch, rng, threshold):
    """The mask is drawn in the input's memory order: a batch-last (Conv2d) input gives a batch-last
    output and input gradient (no transposing multiply), the mask the same draws as a C-ordered
    input's, permuted; through the compiled pass (its size threshold lowered to 1) and the
    portable one."""
    import sys

    if threshold is not None:
        monkeypatch.setattr(sys.modules["xpnn.ops.dropout"], "NUMBA_MIN_ELEMENTS", threshold)
    memory = rng.normal(size=(3, 4, 5, 6))  # (C, H, W, N)
    x = memory.transpose(3, 0, 1, 2)
    layer = nn.Dropout(0.3, generator=np.random.default_rng(7)).to("cpu", dtype="float64")
    y = layer(x)
    assert y.transpose(1, 2, 3, 0).flags.c_contiguous
    grad = np.ascontiguousarray(rng.normal(size=(3, 4, 5, 6))).transpose(3, 0, 1, 2)
    g = layer.backward(grad)
    assert g.transpose(1, 2, 3, 0).flags.c_contiguous
    twin = nn.Dropout(0.3, generator=np.random.default_rng(7)).to("cpu", dtype="float64")
    y_memory = twin(np.ascontiguousarray(memory))  # the same draws over the memory's order
    np.testing.assert_array_equal(y.transpose(1, 2, 3, 0), y_memory)
    np.testing.assert_allclose(g, grad * (y != 0) / 0.7, rtol=1e-14)


def test_dropout2d_drops_whole_channels(backend, rng):
    layer = nn.Dropout2d(0.5, generator=np.random.default_rng(0))
    y = xb.to_numpy(layer(backend.asarray(np.ones((8, 6, 3, 3)), np.float32)))
    per_channel = y.reshape(8, 6, 9)
    assert np.all((per_channel == 0).all(axis=2) | (per_channel == 2).all(axis=2))
    check_layer(layer, rng.normal(size=(2, 3, 2, 2)), backend, rng, reseed=lambda: setattr(layer, "generator", np.random.default_rng(1)))


def test_dropout_rejects_bad_probability():
    with pytest.raises(ValueError, match=r"Dropout: expected a drop probability p in \[0, 1\), got 1.5"):
        nn.Dropout(1.5)


def test_dropout2d_rejects_non_4d(backend):
    with pytest.raises(ShapeError, match=r"Dropout2d: expected a 4-D \(N, C, H, W\) input, got shape \(3, 4\)"):
        nn.Dropout2d()(backend.asarray(np.ones((3, 4)), np.float32))


def test_linear_rejects_wrong_feature_size(backend):
    layer = nn.Linear(784, 10, xp=backend.device)
    with pytest.raises(ShapeError, match=r"Linear\(784, 10\): expected input of shape \(\.\.\., 784\), got \(2, 100\)"):
        layer(backend.asarray(np.zeros((2, 100)), np.float32))


def test_linear_rejects_float64_into_float32(backend):
    layer = nn.Linear(3, 2, xp=backend.device)
    with pytest.raises(DTypeError, match=r"Linear\(3, 2\): expected dtype float32, got float64"):
        layer(backend.asarray(np.zeros((2, 3)), np.float64))


def test_linear_rejects_array_from_another_backend():
    layer = nn.Linear(3, 2, xp="array_api_strict")
    with pytest.raises(DeviceError, match=r"Linear\(3, 2\): expected an array on array_api_strict, got numpy.ndarray float32 \(2, 3\)"):
        layer(np.zeros((2, 3), dtype=np.float32))


def test_linear_rejects_non_array():
    with pytest.raises(DeviceError, match=r"Linear\(3, 2\): expected an array on cpu, got list"):
        nn.Linear(3, 2)([[0.0, 1.0, 2.0]])


def test_layer_rejects_integer_dtype():
    with pytest.raises(DTypeError, match="Linear: expected a floating dtype .*, got int32"):
        nn.Linear(3, 2, dtype="int32")


def test_flatten_rejects_scalar(backend):
    with pytest.raises(ShapeError, match=r"Flatten\(start_dim=1, end_dim=-1\): cannot flatten an input of shape \(3,\)"):
        nn.Flatten()(backend.asarray(np.zeros(3), np.float32))


def test_gelu_rejects_unknown_approximation():
    with pytest.raises(ValueError, match="GELU: expected approximate 'none' or 'tanh', got 'fast'"):
        nn.GELU("fast")


@pytest.mark.parametrize("grad_dtype", [np.float16, np.float64, np.int32])
def test_relu_gradient_of_another_dtype_promotes_as_the_portable_multiply(rng, grad_dtype):
    """A float32 ReLU given a gradient of another dtype returns what ``grad * mask`` in float32
    gives (the portable path's promotion), on the compiled path too."""
    from xpnn.ops import activation

    x = rng.normal(size=(2, 3, 4, 5)).astype(np.float32)
    grad = np.ones(x.shape, dtype=grad_dtype)
    got = activation.relu_numba(x)[1](grad)
    expected = activation.relu_portable(x)[1](grad)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("threads_count", [1, 2])
@pytest.mark.parametrize("batch_last", [False, True])
def test_dropout_numba_path_equals_its_portable_twin_bit_for_bit(monkeypatch, rng, dtype, threads_count, batch_last):
    """ops.dropout on NumPy (one compiled pass each way, a uint8 keep mask) against the portable
    comparison and multiply run on array_api_strict with the same draws: equal outputs and
    gradients, NaN and infinite inputs included (0 times them stays NaN where dropped), laid out
    like the input, also split over two xpnn threads."""
    import array_api_strict

    import sys

    from xpnn import ops, threads
    from xpnn.ops.dropout import dropout_portable

    monkeypatch.setattr(threads, "SPLIT_MIN_ELEMENTS", 1)
    monkeypatch.setattr(sys.modules["xpnn.ops.dropout"], "NUMBA_MIN_ELEMENTS", 1)
    memory = rng.normal(size=(3, 4, 5, 6)).astype(dtype)
    memory[0, 0, 0, :3] = [np.nan, np.inf, -np.inf]
    x = memory.transpose(3, 0, 1, 2) if batch_last else memory
    uniform = rng.random(size=memory.shape).astype(dtype)
    uniform = uniform.transpose(3, 0, 1, 2) if batch_last else uniform
    grad = rng.normal(size=memory.shape).astype(dtype)
    grad[1, 0, 0, :2] = [np.nan, -1.0]
    grad = grad.transpose(3, 0, 1, 2) if batch_last else grad
    with threads.parallel(threads_count):
        y, backward = ops.dropout(x, uniform, 0.3)
        g = backward(grad)
    assert "dropout_numba" in backward.__qualname__  # the door took the compiled path
    strict = array_api_strict.asarray
    with np.errstate(invalid="ignore"):  # infinity times a dropped 0
        y_twin, backward_twin = dropout_portable(strict(x), strict(uniform), 0.3)
        g_twin = np.asarray(backward_twin(strict(grad)))
        other = backward(grad.astype(np.float64 if dtype == np.float32 else np.float32))  # another dtype: NumPy's multiply
    np.testing.assert_array_equal(y, np.asarray(y_twin))
    np.testing.assert_array_equal(g, g_twin)
    assert y.strides == x.strides and g.strides == grad.strides
    np.testing.assert_allclose(other, g_twin.astype(other.dtype), rtol=1e-6)


def test_small_arrays_take_the_portable_relu_and_dropout_on_numpy(rng):
    """Below NUMBA_MIN_ELEMENTS the compiled passes' fixed cost per call outweighs what they save
    (bench/compiled_threshold.py): a small array takes the portable path, a large one the
    compiled one, whose values equal the portable path's."""
    import sys

    from xpnn import ops

    activation, dropout = sys.modules["xpnn.ops.activation"], sys.modules["xpnn.ops.dropout"]
    cases = ((activation, lambda x: ops.relu(x), lambda x: activation.relu_portable(x)),
             (dropout, lambda x: ops.dropout(x, np.linspace(0, 1, x.size, dtype=x.dtype), 0.25),
              lambda x: dropout.dropout_portable(x, np.linspace(0, 1, x.size, dtype=x.dtype), 0.25)))
    for module, call, portable in cases:
        small = rng.normal(size=module.NUMBA_MIN_ELEMENTS - 1).astype(np.float32)
        large = rng.normal(size=module.NUMBA_MIN_ELEMENTS).astype(np.float32)
        assert "portable" in call(small)[1].__qualname__
        (y, backward), (expected, expected_backward) = call(large), portable(large)
        assert "portable" not in backward.__qualname__
        np.testing.assert_array_equal(y, expected)
        np.testing.assert_array_equal(backward(large), expected_backward(large))

"""BatchNorm1d / BatchNorm2d: values and running statistics against a float64 reference, gradients
in train and eval mode, buffers in state_dict, parity across backends, errors, and torch."""

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import DTypeError, ShapeError

from gradcheck import check_layer

CASES = [(nn.BatchNorm1d, (8, 3)), (nn.BatchNorm1d, (4, 3, 5)), (nn.BatchNorm2d, (4, 3, 5, 6))]


def reference_batchnorm(x, gamma, beta, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps) * gamma.reshape(shape) + beta.reshape(shape)
    count = x.size // x.shape[1]
    return y, mean.reshape(-1), var.reshape(-1) * count / (count - 1)


def _affine(layer, be, rng):
    c = layer.num_features
    layer.weight.data = be.asarray(rng.uniform(0.5, 1.5, size=c), np.float64)
    layer.bias.data = be.asarray(rng.normal(size=c), np.float64)
    return xb.to_numpy(layer.weight.data), xb.to_numpy(layer.bias.data)


@pytest.mark.parametrize("make, shape", CASES)
def test_train_mode_values_and_running_stats(backend, rng, make, shape):
    layer = make(3, dtype=np.float64, xp=backend.device)
    gamma, beta = _affine(layer, backend, rng)
    running_mean, running_var = np.zeros(3), np.ones(3)
    for step in range(3):
        x = rng.normal(loc=2.0, scale=3.0, size=shape)
        y = layer(backend.asarray(x))
        expected, mean, unbiased = reference_batchnorm(x, gamma, beta)
        np.testing.assert_allclose(xb.to_numpy(y), expected, rtol=1e-10, atol=1e-12)
        running_mean = 0.9 * running_mean + 0.1 * mean
        running_var = 0.9 * running_var + 0.1 * unbiased
    np.testing.assert_allclose(xb.to_numpy(layer.running_mean), running_mean, rtol=1e-12)
    np.testing.assert_allclose(xb.to_numpy(layer.running_var), running_var, rtol=1e-12)
    assert int(xb.to_numpy(layer.num_batches_tracked)) == 3


@pytest.mark.parametrize("make, shape", CASES)
def test_eval_mode_uses_running_stats(backend, rng, make, shape):
    layer = make(3, dtype=np.float64, xp=backend.device)
    gamma, beta = _affine(layer, backend, rng)
    mean, var = rng.normal(size=3), rng.uniform(0.5, 2.0, size=3)
    layer.running_mean = backend.asarray(mean, np.float64)
    layer.running_var = backend.asarray(var, np.float64)
    layer.eval()
    x = rng.normal(size=shape)
    y = layer(backend.asarray(x))
    bshape = (1, 3) + (1,) * (len(shape) - 2)
    expected = (x - mean.reshape(bshape)) / np.sqrt(var.reshape(bshape) + 1e-5) * gamma.reshape(bshape) + beta.reshape(bshape)
    np.testing.assert_allclose(xb.to_numpy(y), expected, rtol=1e-12)
    np.testing.assert_array_equal(xb.to_numpy(layer.running_mean), mean)  # eval leaves them alone
    assert int(xb.to_numpy(layer.num_batches_tracked)) == 0


@pytest.mark.parametrize("make, shape", CASES)
def test_train_mode_gradients(backend, rng, make, shape):
    layer = make(3)
    layer.weight.data = rng.uniform(0.5, 1.5, size=3).astype(np.float32)
    layer.bias.data = rng.normal(size=3).astype(np.float32)
    check_layer(layer, rng.normal(size=shape), backend, rng)


@pytest.mark.parametrize("make, shape", CASES)
def test_eval_mode_gradients(backend, rng, make, shape):
    layer = make(3)
    layer.weight.data = rng.uniform(0.5, 1.5, size=3).astype(np.float32)
    layer.bias.data = rng.normal(size=3).astype(np.float32)
    layer.running_mean = rng.normal(size=3).astype(np.float32)
    layer.running_var = rng.uniform(0.5, 2.0, size=3).astype(np.float32)
    check_layer(layer.eval(), rng.normal(size=shape), backend, rng)


@pytest.mark.parametrize("kwargs", [{"affine": False}, {"track_running_stats": False}, {"affine": False, "track_running_stats": False}])
def test_options_gradients_and_values(backend, rng, kwargs):
    layer = nn.BatchNorm2d(2, **kwargs)
    check_layer(layer, rng.normal(size=(3, 2, 3, 2)), backend, rng)
    x = rng.normal(size=(3, 2, 3, 2))
    layer.eval()  # without running stats, eval mode still normalises by the batch
    y = xb.to_numpy(layer(backend.asarray(x)))
    if not layer.track_running_stats:
        np.testing.assert_allclose(y, reference_batchnorm(x, np.ones(2), np.zeros(2))[0], rtol=1e-10, atol=1e-12)
    assert [n for n, _ in layer.named_parameters()] == ([] if not layer.affine else ["weight", "bias"])


def test_momentum_none_is_a_cumulative_average(backend, rng):
    layer = nn.BatchNorm1d(2, momentum=None, dtype=np.float64, xp=backend.device)
    batches = [rng.normal(size=(5, 2)) for _ in range(4)]
    for x in batches:
        layer(backend.asarray(x))
    np.testing.assert_allclose(xb.to_numpy(layer.running_mean), np.mean([b.mean(0) for b in batches], axis=0), rtol=1e-12)
    np.testing.assert_allclose(xb.to_numpy(layer.running_var), np.mean([b.var(0, ddof=1) for b in batches], axis=0), rtol=1e-12)


def test_buffers_in_state_dict_and_moves(backend, rng):
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).to(backend.device)
    model(backend.asarray(rng.normal(size=(2, 1, 5, 5)), np.float32))
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var", "1.num_batches_tracked"]
    assert state["1.num_batches_tracked"].dtype == np.int64 and int(state["1.num_batches_tracked"]) == 1
    assert state["1.running_mean"].dtype == np.float32 and np.any(state["1.running_mean"] != 0)
    fresh = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2))
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh[1].running_var, state["1.running_var"])
    fresh.to(backend.device, dtype="float64")
    assert fresh[1].running_mean.dtype == backend.xp.float64 and fresh[1].num_batches_tracked.dtype == backend.xp.int64


def test_parity_with_numpy_float32(backend, rng):
    x = rng.normal(size=(6, 4, 3, 5)).astype(np.float32)
    up = rng.normal(size=x.shape).astype(np.float32)
    outputs = []
    for device in ("cpu", backend.device):
        layer = nn.BatchNorm2d(4, xp=device)
        y_train = layer(xb.asarray(x, layer.xp, None, layer.device))
        g_train = layer.backward(xb.asarray(up, layer.xp, None, layer.device))
        layer.eval()
        y_eval = layer(xb.asarray(x, layer.xp, None, layer.device))
        g_eval = layer.backward(xb.asarray(up, layer.xp, None, layer.device))
        assert all(a.dtype == layer.xp.float32 for a in (y_train, g_train, y_eval, g_eval, layer.running_var))
        outputs.append([xb.to_numpy(a) for a in (y_train, g_train, y_eval, g_eval, layer.weight.grad, layer.running_var)])
    for ref, got in zip(*outputs):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)


def test_matches_torch(rng):
    torch = pytest.importorskip("torch")
    for shape in [(8, 3), (4, 3, 5), (4, 3, 5, 6)]:
        layer = (nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d)(3, momentum=0.3, dtype=np.float64)
        reference = (torch.nn.BatchNorm2d if len(shape) == 4 else torch.nn.BatchNorm1d)(3, momentum=0.3, dtype=torch.float64)
        gamma, beta = rng.uniform(0.5, 1.5, size=3), rng.normal(size=3)
        layer.weight.data, layer.bias.data = gamma.copy(), beta.copy()
        with torch.no_grad():
            reference.weight.copy_(torch.from_numpy(gamma))
            reference.bias.copy_(torch.from_numpy(beta))
        for train in (True, True, False):
            layer.train(train)
            reference.train(train)
            layer.zero_grad()
            reference.zero_grad()
            x = rng.normal(size=shape)
            up = rng.normal(size=shape)
            tx = torch.tensor(x, requires_grad=True)
            ty = reference(tx)
            ty.backward(torch.from_numpy(up))
            np.testing.assert_allclose(layer(x), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(layer.backward(up), tx.grad.numpy(), rtol=1e-9, atol=1e-11)
            np.testing.assert_allclose(layer.weight.grad, reference.weight.grad.numpy(), rtol=1e-10)
            np.testing.assert_allclose(layer.bias.grad, reference.bias.grad.numpy(), rtol=1e-10)
        state = reference.state_dict()
        np.testing.assert_allclose(layer.running_mean, state["running_mean"].numpy(), rtol=1e-12)
        np.testing.assert_allclose(layer.running_var, state["running_var"].numpy(), rtol=1e-12)
        assert int(layer.num_batches_tracked) == int(state["num_batches_tracked"])


def test_repr_like_pytorch():
    assert repr(nn.BatchNorm2d(8)) == "BatchNorm2d(8, eps=1e-05, momentum=0.1, affine=True, track_running_stats=True)"
    assert repr(nn.BatchNorm1d(4, momentum=None, affine=False)) == "BatchNorm1d(4, eps=1e-05, momentum=None, affine=False, track_running_stats=True)"


def test_rejects_wrong_channels_and_rank(backend):
    with pytest.raises(ShapeError, match=r"BatchNorm2d\(8\): expected input of shape \(N, 8, H, W\), got \(2, 4, 3, 3\)"):
        nn.BatchNorm2d(8, xp=backend.device)(backend.asarray(np.zeros((2, 4, 3, 3)), np.float32))
    with pytest.raises(ShapeError, match=r"BatchNorm2d\(8\): expected input of shape \(N, 8, H, W\), got \(2, 8\)"):
        nn.BatchNorm2d(8, xp=backend.device)(backend.asarray(np.zeros((2, 8)), np.float32))
    with pytest.raises(ShapeError, match=r"BatchNorm1d\(3\): expected input of shape \(N, 3\) or \(N, 3, L\), got \(2, 3, 4, 4\)"):
        nn.BatchNorm1d(3, xp=backend.device)(backend.asarray(np.zeros((2, 3, 4, 4)), np.float32))


def test_rejects_single_value_per_channel_in_training(backend):
    layer = nn.BatchNorm1d(3, xp=backend.device)
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3\): expected more than 1 value per channel when training, got input of shape \(1, 3\)"):
        layer(backend.asarray(np.zeros((1, 3)), np.float32))
    layer.eval()
    assert tuple(layer(backend.asarray(np.zeros((1, 3)), np.float32)).shape) == (1, 3)


def test_rejects_wrong_dtype_and_bad_arguments(backend):
    with pytest.raises(DTypeError, match=r"BatchNorm2d\(2\): expected dtype float32, got float64"):
        nn.BatchNorm2d(2, xp=backend.device)(backend.asarray(np.zeros((2, 2, 2, 2)), np.float64))
    with pytest.raises(ValueError, match=r"BatchNorm2d: expected momentum in \[0, 1\] or None, got 1.5"):
        nn.BatchNorm2d(2, momentum=1.5)
    with pytest.raises(ValueError, match=r"BatchNorm1d: expected a positive int num_features, got 0"):
        nn.BatchNorm1d(0)


LAYOUTS = {  # name -> (host array, shape) -> the array laid out that way
    "batch-first": lambda a: np.ascontiguousarray(a),
    "batch-last": lambda a: np.moveaxis(np.ascontiguousarray(np.moveaxis(a, 0, -1)), -1, 0),
    "strided": lambda a: np.ascontiguousarray(np.concatenate([a, a], axis=-1))[..., ::2],
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (4, 3, 5, 6), (1, 2, 3, 4)])
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("affine", [True, False])
def test_numba_batch_norm_equals_its_portable_twin(rng, dtype, shape, layout, affine):
    """``ops.batch_norm_training`` on NumPy (the Numba kernels for batch-first and batch-last
    memory, the portable version for other strides) against the portable version run on
    array_api_strict: output laid out like the input, statistics, and all three gradients."""
    import array_api_strict

    from xpnn.ops import normalization

    x = LAYOUTS[layout](rng.normal(2.0, 3.0, size=shape).astype(dtype))
    grad = LAYOUTS[layout](rng.normal(size=shape).astype(dtype))
    weight = rng.uniform(0.5, 1.5, size=shape[1]).astype(dtype) if affine else None
    bias = rng.normal(size=shape[1]).astype(dtype) if affine else None
    assert (normalization._channel_blocks(x) is None) == (layout == "strided")
    y, mean, var, backward = normalization.batch_norm_training(x, weight, bias, 1e-5)
    strict = (lambda a: None if a is None else array_api_strict.asarray(a))
    y_ref, mean_ref, var_ref, backward_ref = normalization.batch_norm_training_portable(strict(x), strict(weight), strict(bias), 1e-5)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    assert y.shape == x.shape and y.dtype == dtype and mean.dtype == dtype and var.dtype == dtype
    if layout == "batch-last":
        assert np.moveaxis(y, 0, -1).flags.c_contiguous  # the layers that follow keep the layout
    for got, expected in zip((y, mean, var), (y_ref, mean_ref, var_ref)):
        np.testing.assert_allclose(got, np.asarray(expected), **tol)
    grads, grads_ref = backward(grad), backward_ref(strict(grad))
    for got, expected in zip(grads, grads_ref):
        if expected is None:
            assert got is None
        else:
            assert got.dtype == dtype
            np.testing.assert_allclose(got, np.asarray(expected), **tol)


def test_batch_norm_gradient_of_another_layout_is_read_in_the_input_layout(rng):
    """A batch-last input with a batch-first gradient (or the reverse) gives the same gradients."""
    from xpnn.ops import normalization

    host = rng.normal(size=(4, 3, 5, 6))
    grad = rng.normal(size=host.shape)
    expected = normalization.batch_norm_training_portable(host, np.ones(3), np.zeros(3), 1e-5)[3](grad)
    for x_layout, grad_layout in (("batch-last", "batch-first"), ("batch-first", "batch-last")):
        backward = normalization.batch_norm_training(LAYOUTS[x_layout](host), np.ones(3), np.zeros(3), 1e-5)[3]
        for got, want in zip(backward(LAYOUTS[grad_layout](grad)), expected):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)

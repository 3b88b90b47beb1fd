"""Embedding: lookups of any integer shape and dtype, the weight gradient (finite differences, a
slow reference, the compiled pass against its portable twin), padding_idx, PyTorch's outputs and
gradients, and errors, on every backend."""

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ConfigError, DTypeError, ShapeError
from xpnn.gradient_check import _numeric as numeric_grad
from xpnn.ops import embedding as embedding_ops


def reference_gradient(indices, grad, num, padding_idx=None, scale_grad_by_freq=False):
    flat = indices.reshape(-1)
    rows = grad.reshape(len(flat), grad.shape[-1])
    if scale_grad_by_freq:
        rows = rows / np.bincount(flat, minlength=num)[flat][:, None]
    out = np.zeros((num, rows.shape[1]))
    np.add.at(out, flat, rows)
    if padding_idx is not None:
        out[padding_idx] = 0
    return out


@pytest.mark.parametrize("shape", [(5,), (2, 3), (2, 3, 4), (), (0,), (3, 0)])
@pytest.mark.parametrize("dtype", ["int64", "int32", "uint8", "int16"])
def test_lookup_of_any_shape_and_integer_dtype(backend, rng, shape, dtype):
    layer = nn.Embedding(9, 4, dtype=np.float64, xp=backend.device)
    table = xb.to_numpy(layer.weight.data).copy()
    indices = rng.integers(0, 9, size=shape).astype(dtype)
    y = layer(backend.asarray(indices))
    assert tuple(y.shape) == shape + (4,) and y.dtype == backend.xp.float64
    np.testing.assert_array_equal(xb.to_numpy(y), table[indices.astype(np.int64)])
    assert layer.backward(backend.xp.ones(y.shape, dtype=y.dtype, device=backend.place)) is None
    np.testing.assert_array_equal(xb.to_numpy(layer.weight.grad), reference_gradient(indices.astype(np.int64), np.ones(shape + (4,)), 9))


@pytest.mark.parametrize("padding_idx, scale", [(None, False), (2, False), (-1, False), (None, True), (0, True)])
def test_weight_gradient_against_finite_differences(backend, rng, padding_idx, scale):
    layer = nn.Embedding(6, 3, padding_idx=padding_idx, scale_grad_by_freq=scale, dtype=np.float64, xp=backend.device)
    indices = backend.asarray(np.array([[0, 2, 2, 5], [1, 2, 0, 5], [3, 3, 3, 2]]))
    up = rng.normal(size=(3, 4, 3))

    def objective(table):
        layer.weight.data = backend.asarray(table)
        return float(np.sum(xb.to_numpy(layer(indices)) * up))

    table = xb.to_numpy(layer.weight.data).copy()
    numeric = numeric_grad(objective, table.copy(), 1e-6)
    layer.weight.data = backend.asarray(table)
    layer(indices)
    layer.backward(backend.asarray(up))
    expected = reference_gradient(xb.to_numpy(indices), up, 6, None if padding_idx is None else padding_idx % 6, scale)
    found = xb.to_numpy(layer.weight.grad)
    np.testing.assert_allclose(found, expected, rtol=1e-12, atol=1e-14)
    if padding_idx is None and not scale:  # the gradient of the function the layer computes
        np.testing.assert_allclose(found, numeric, rtol=1e-6, atol=1e-8)


def test_padding_row_starts_at_zero_and_gets_no_gradient(backend, rng):
    layer = nn.Embedding(5, 3, padding_idx=-2, xp=backend.device)
    assert layer.padding_idx == 3
    table = xb.to_numpy(layer.weight.data)
    assert np.all(table[3] == 0) and np.all(table[[0, 1, 2, 4]] != 0)
    indices = backend.asarray(np.array([3, 1, 3, 3]))
    y = layer(indices)
    assert np.all(xb.to_numpy(y)[[0, 2, 3]] == 0)
    layer.backward(backend.asarray(rng.normal(size=(4, 3)), np.float32))
    grad = xb.to_numpy(layer.weight.grad)
    assert np.all(grad[3] == 0) and np.all(grad[1] != 0)


def test_gradients_accumulate(backend, rng):
    layer = nn.Embedding(4, 2, dtype=np.float64, xp=backend.device)
    indices = backend.asarray(np.array([[1, 1], [0, 3]]))
    up = backend.asarray(rng.normal(size=(2, 2, 2)))
    layer(indices)
    layer.backward(up)
    first = xb.to_numpy(layer.weight.grad).copy()
    layer(indices)
    layer.backward(up)
    np.testing.assert_allclose(xb.to_numpy(layer.weight.grad), 2 * first, rtol=1e-12)
    layer.zero_grad()
    layer(indices)
    layer.backward(up)
    np.testing.assert_allclose(xb.to_numpy(layer.weight.grad), first, rtol=1e-12)


@pytest.mark.parametrize("num, dim, count", [(1, 1, 1), (7, 3, 20), (50, 16, 300), (200, 5, 40), (3, 4, 0)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("padding_idx, scale", [(-1, False), (0, False), (-1, True), (2, True)])
def test_compiled_backward_matches_portable_twin(rng, num, dim, count, dtype, padding_idx, scale):
    indices = rng.integers(0, num, size=count).astype(np.int64)
    grad = rng.normal(size=(count, dim)).astype(dtype)
    padding_idx = padding_idx if padding_idx < num else -1
    compiled = embedding_ops.embedding_backward_numba(indices, grad, num, padding_idx, scale)
    portable = embedding_ops.embedding_backward_portable(indices, grad, num, padding_idx, scale)
    expected = reference_gradient(indices, grad.astype(np.float64), num, None if padding_idx < 0 else padding_idx, scale)
    assert compiled.dtype == portable.dtype == dtype and compiled.shape == portable.shape == (num, dim)
    tolerance = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(compiled, expected, **tolerance)
    np.testing.assert_allclose(portable, expected, **tolerance)


def test_float16_table_takes_the_portable_path(backend, rng):
    if not hasattr(backend.xp, "float16"):
        pytest.skip(f"{backend.name} has no float16")
    layer = nn.Embedding(6, 3, dtype="float16", xp=backend.device)
    indices = rng.integers(0, 6, size=(4, 5))
    y = layer(backend.asarray(indices))
    assert y.dtype == backend.xp.float16
    up = rng.normal(size=(4, 5, 3)).astype(np.float16)
    layer.backward(backend.asarray(up))
    np.testing.assert_allclose(xb.to_numpy(layer.weight.grad).astype(np.float64), reference_gradient(indices, up.astype(np.float64), 6), rtol=1e-2, atol=1e-2)


def test_parity_with_numpy_float32(backend, rng):
    indices = rng.integers(0, 30, size=(8, 7))
    up = rng.normal(size=(8, 7, 5)).astype(np.float32)
    found = []
    for device in ("cpu", backend.device):
        layer = nn.Embedding(30, 5, padding_idx=4, generator=np.random.default_rng(3), xp=device)
        y = layer(xb.asarray(indices, layer.xp, None, layer.device))
        layer.backward(xb.asarray(up, layer.xp, None, layer.device))
        assert y.dtype == layer.weight.grad.dtype == layer.xp.float32
        found.append((xb.to_numpy(y), xb.to_numpy(layer.weight.grad)))
    np.testing.assert_array_equal(found[1][0], found[0][0])
    np.testing.assert_allclose(found[1][1], found[0][1], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("kwargs", [{}, {"padding_idx": 1}, {"padding_idx": -3}, {"scale_grad_by_freq": True}, {"padding_idx": 0, "scale_grad_by_freq": True}])
def test_matches_torch(rng, kwargs):
    torch = pytest.importorskip("torch")
    layer = nn.Embedding(10, 4, dtype=np.float64, **kwargs)
    reference = torch.nn.Embedding(10, 4, dtype=torch.float64, **kwargs)
    assert reference.padding_idx == layer.padding_idx
    if "padding_idx" in kwargs:  # both start with a zero padding row
        assert np.all(layer.weight.data[layer.padding_idx] == 0) and torch.all(reference.weight[reference.padding_idx] == 0)
    layer.load_state_dict({k: v.numpy() for k, v in reference.state_dict().items()})  # PyTorch's state_dict as it is
    indices = rng.integers(0, 10, size=(3, 2, 5))
    up = rng.normal(size=(3, 2, 5, 4))
    yt = reference(torch.from_numpy(indices))
    yt.backward(torch.from_numpy(up))
    np.testing.assert_array_equal(layer(indices), yt.detach().numpy())
    layer.backward(up)
    np.testing.assert_allclose(layer.weight.grad, reference.weight.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_out_of_range_indices_on_numpy_are_an_error(rng):
    layer = nn.Embedding(5, 2)
    with pytest.raises(ConfigError, match=r"Embedding\(5, 2\): expected indices in \[0, 4\], got 5"):
        layer(np.array([[0, 5], [1, 2]]))
    with pytest.raises(ConfigError, match=r"Embedding\(5, 2, padding_idx=0\): expected indices in \[0, 4\], got -1"):
        nn.Embedding(5, 2, padding_idx=0)(np.array([3, -1, 7]))


def test_out_of_range_indices_elsewhere_give_nan_rows_and_no_gradient(backend, rng):
    if backend.name == "numpy":
        pytest.skip("NumPy checks the range (the test above)")
    layer = nn.Embedding(5, 2, dtype=np.float64, xp=backend.device)
    indices = np.array([[0, 5], [-1, 2]])
    y = xb.to_numpy(layer(backend.asarray(indices)))
    assert np.all(np.isnan(y[0, 1])) and np.all(np.isnan(y[1, 0]))
    assert np.all(np.isfinite(y[0, 0])) and np.all(np.isfinite(y[1, 1]))
    layer.backward(backend.asarray(np.ones((2, 2, 2))))
    np.testing.assert_array_equal(xb.to_numpy(layer.weight.grad), reference_gradient(np.array([0, 2]), np.ones((2, 2)), 5))


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Embedding(0, 3), r"Embedding: expected num_embeddings to be a positive int, got 0"),
    (lambda: nn.Embedding(4, 2.0), r"Embedding: expected embedding_dim to be a positive int, got 2.0"),
    (lambda: nn.Embedding(4, 2, padding_idx=4), r"Embedding: expected padding_idx to be None or an int in \[-4, 3\], got 4"),
    (lambda: nn.Embedding(4, 2, padding_idx=-5), r"padding_idx .* got -5"),
    (lambda: nn.Embedding(4, 2, padding_idx=1.0), r"padding_idx .* got 1.0"),
    (lambda: nn.Embedding(4, 2, max_norm=1.0), r"Embedding: max_norm is not supported .*got max_norm=1.0; use max_norm=None"),
    (lambda: nn.Embedding(4, 2, sparse=True), r"Embedding: sparse gradients are not supported; use sparse=False"),
])
def test_bad_construction(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_bad_dtype_construction():
    with pytest.raises(DTypeError, match="Embedding: expected a floating dtype"):
        nn.Embedding(3, 2, dtype="int64")


@pytest.mark.parametrize("values, message", [
    (np.array([0.0, 1.0], dtype=np.float32), r"Embedding\(4, 2\): expected integer indices, got float32 of shape \(2,\)"),
    (np.array([[1.0]]), r"Embedding\(4, 2\): expected integer indices, got float64 of shape \(1, 1\)"),
    (np.array([True, False]), r"Embedding\(4, 2\): expected integer indices, got bool of shape \(2,\)"),
])
def test_non_integer_indices_are_refused(backend, values, message):
    layer = nn.Embedding(4, 2, xp=backend.device)
    with pytest.raises(DTypeError, match=message):
        layer(backend.asarray(values))


def test_indices_on_another_backend_are_refused(rng):
    pytest.importorskip("array_api_strict")
    layer = nn.Embedding(4, 2, xp="array_api_strict")
    with pytest.raises(Exception, match=r"Embedding\(4, 2\): expected an array on array_api_strict"):
        layer(np.array([1, 2]))


def test_gradient_of_the_wrong_shape_is_refused(rng):
    layer = nn.Embedding(4, 2)
    layer(np.array([1, 2, 3]))
    with pytest.raises(ShapeError, match=r"Embedding\(4, 2\): expected a gradient of shape \(3, 2\)"):
        layer.backward(np.ones((3, 3), np.float32))


def test_in_a_model_with_linear_and_cross_entropy(backend, rng):
    """A bag-of-words classifier trains end to end: Embedding's backward ends the chain."""
    embed = nn.Embedding(20, 8, padding_idx=0, xp=backend.device)
    head = nn.Linear(8, 3, xp=backend.device)
    loss_fn = nn.CrossEntropyLoss()
    indices = backend.asarray(rng.integers(0, 20, size=(6, 5)))
    labels = backend.asarray(rng.integers(0, 3, size=6))
    xp = backend.xp
    vectors = embed(indices)
    loss = loss_fn(head(xp.mean(vectors, axis=1)), labels)
    grad = head.backward(loss_fn.backward())
    embed.backward(xp.broadcast_to(grad[:, None, :] / 5, tuple(vectors.shape)))
    assert float(xb.to_numpy(loss)) > 0
    assert np.any(xb.to_numpy(embed.weight.grad) != 0) and np.all(xb.to_numpy(embed.weight.grad)[0] == 0)


def test_config_budget_and_kinds_are_checked_before_building():
    config = nn.Embedding(7, 3, padding_idx=-1).get_config()
    assert nn.check_config(config) == 21
    config["args"]["num_embeddings"] = 2**40
    with pytest.raises(ConfigError, match=r"model: the config describes 3,298,534,883,328 parameter and buffer elements"):
        nn.from_config(config)
    config["args"].update(num_embeddings=7, padding_idx=1.5)
    with pytest.raises(ConfigError, match=r"padding_idx: expected an int or null, found 1.5"):
        nn.from_config(config)

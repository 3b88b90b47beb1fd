"""Losses: values against formulas written out here, float64 finite-difference gradients, bad input."""

import warnings

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ConfigError, DeviceError, DTypeError, ShapeError

from gradcheck import check_loss


def _log_softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_labels_gradient(backend, rng, reduction, smoothing):
    labels = backend.asarray(rng.integers(0, 5, size=6))
    upstream = rng.normal(size=6) if reduction == "none" else None
    check_loss(nn.CrossEntropyLoss(reduction=reduction, label_smoothing=smoothing), rng.normal(size=(6, 5)), labels, backend, upstream=upstream)


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_probability_target_gradient(backend, rng, smoothing):
    p = rng.random(size=(4, 3))
    target = backend.asarray(p / p.sum(axis=1, keepdims=True), np.float64)
    check_loss(nn.CrossEntropyLoss(label_smoothing=smoothing), rng.normal(size=(4, 3)), target, backend)


def test_cross_entropy_is_mean_over_batch_not_classes(backend, rng):
    z = rng.normal(size=(8, 10)).astype(np.float32)
    y = rng.integers(0, 10, size=8)
    loss = nn.CrossEntropyLoss()(backend.asarray(z), backend.asarray(y))
    expected = -_log_softmax(z.astype(np.float64))[np.arange(8), y].mean()
    assert tuple(loss.shape) == () and loss.dtype == backend.xp.float32
    assert type(loss) is xb.array_type(backend.xp)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-6)


def test_cross_entropy_label_smoothing_value(backend, rng):
    z = rng.normal(size=(5, 4))
    y = rng.integers(0, 4, size=5)
    logp = _log_softmax(z)
    expected = (0.9 * -logp[np.arange(5), y] + 0.1 * -logp.mean(axis=1)).mean()
    loss = nn.CrossEntropyLoss(label_smoothing=0.1)(backend.asarray(z), backend.asarray(y))
    np.testing.assert_allclose(float(loss), expected, rtol=1e-12)


def test_cross_entropy_one_hot_equals_labels(backend, rng):
    z = backend.asarray(rng.normal(size=(6, 4)), np.float32)
    y = rng.integers(0, 4, size=6)
    one_hot = backend.asarray(np.eye(4)[y], np.float32)
    by_label = nn.CrossEntropyLoss()(z, backend.asarray(y))
    by_one_hot = nn.CrossEntropyLoss()(z, one_hot)
    np.testing.assert_allclose(float(by_label), float(by_one_hot), rtol=1e-6)


def test_cross_entropy_large_logits_are_finite(backend):
    z = backend.asarray(np.array([[1e4, -1e4, 0.0]]), np.float32)
    loss_fn = nn.CrossEntropyLoss()
    assert float(loss_fn(z, backend.asarray(np.array([1])))) == pytest.approx(2e4)
    assert np.all(np.isfinite(xb.to_numpy(loss_fn.backward())))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_nll_gradient(backend, rng, reduction):
    labels = backend.asarray(rng.integers(0, 4, size=5))
    upstream = rng.normal(size=5) if reduction == "none" else None
    check_loss(nn.NLLLoss(reduction=reduction), rng.normal(size=(5, 4)), labels, backend, upstream=upstream)


def test_logsoftmax_then_nll_equals_cross_entropy(backend, rng):
    z = backend.asarray(rng.normal(size=(6, 5)), np.float32)
    y = backend.asarray(rng.integers(0, 5, size=6))
    a = nn.NLLLoss()(nn.LogSoftmax()(z), y)
    b = nn.CrossEntropyLoss()(z, y)
    np.testing.assert_allclose(float(a), float(b), rtol=1e-6)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse(backend, rng, reduction):
    target_host = rng.normal(size=(4, 3))
    target = backend.asarray(target_host, np.float64)
    check_loss(nn.MSELoss(reduction=reduction), rng.normal(size=(4, 3)), target, backend)
    x = rng.normal(size=(4, 3))
    value = float(nn.MSELoss(reduction=reduction)(backend.asarray(x), target))
    squares = (x - target_host) ** 2
    assert value == pytest.approx(squares.mean() if reduction == "mean" else squares.sum(), rel=1e-12)


def test_bce_with_logits(backend, rng):
    target = backend.asarray(rng.integers(0, 2, size=(5, 2)), np.float64)
    check_loss(nn.BCEWithLogitsLoss(), rng.normal(size=(5, 2)) * 3, target, backend)
    check_loss(nn.BCEWithLogitsLoss(reduction="sum"), rng.normal(size=(5, 2)), target, backend)


def test_bce_with_logits_is_stable_for_large_logits(backend):
    x = np.array([-1e4, -100.0, 0.0, 100.0, 1e4])
    y = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
    expected = np.array([1e4, 0.0, np.log(2), 0.0, 1e4])
    loss_fn = nn.BCEWithLogitsLoss(reduction="none")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        values = xb.to_numpy(loss_fn(backend.asarray(x, np.float32), backend.asarray(y, np.float32)))
        grad = xb.to_numpy(loss_fn.backward())
    np.testing.assert_allclose(values, expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(grad, [-1.0, 0.0, -0.5, 0.0, 1.0], atol=1e-6)


def test_bce(backend, rng):
    target = backend.asarray(rng.integers(0, 2, size=(6,)), np.float64)
    check_loss(nn.BCELoss(), rng.uniform(0.05, 0.95, size=6), target, backend)


def test_bce_clamps_log_at_minus_100(backend):
    p = backend.asarray(np.array([0.0, 1.0]), np.float32)
    y = backend.asarray(np.array([1.0, 0.0]), np.float32)
    with np.errstate(divide="ignore"):
        loss = nn.BCELoss()(p, y)
    assert float(loss) == pytest.approx(100.0)


def test_loss_rejects_label_out_of_range(backend):
    """NumPy checks the label range (free: the labels are in host memory); on a device a check
    would read the labels back every step, so there a bad label makes its row's loss NaN, which
    the Trainer's non-finite check reports."""
    z = backend.asarray(np.zeros((3, 10)), np.float32)
    if backend.name != "numpy":
        for loss_fn, bad in ((nn.CrossEntropyLoss(reduction="none"), 10), (nn.NLLLoss(reduction="none"), -1)):
            losses = xb.to_numpy(loss_fn(z, backend.asarray(np.array([0, bad, 3]))))
            assert np.isnan(losses[1]) and np.all(np.isfinite(losses[[0, 2]])), type(loss_fn).__name__
        return
    with pytest.raises(ConfigError, match=r"CrossEntropyLoss: expected class labels in \[0, 9\], got 10") as info:
        nn.CrossEntropyLoss()(z, backend.asarray(np.array([0, 10, 3])))
    assert not isinstance(info.value, ShapeError), "a label's value is not a shape"
    with pytest.raises(ConfigError, match=r"NLLLoss: expected class labels in \[0, 9\], got -1"):
        nn.NLLLoss()(z, backend.asarray(np.array([0, -1, 3])))


def test_loss_rejects_wrong_label_shape(backend):
    z = backend.asarray(np.zeros((3, 10)), np.float32)
    with pytest.raises(ShapeError, match=r"CrossEntropyLoss: expected class labels of shape \(3,\), got \(4,\)"):
        nn.CrossEntropyLoss()(z, backend.asarray(np.array([0, 1, 2, 3])))


def test_loss_rejects_non_2d_logits(backend):
    with pytest.raises(ShapeError, match=r"CrossEntropyLoss: expected input of shape \(N, C\) with C >= 1 classes, got \(3, 4, 5\)"):
        nn.CrossEntropyLoss()(backend.asarray(np.zeros((3, 4, 5)), np.float32), backend.asarray(np.zeros(3, dtype=np.int64)))


def test_loss_rejects_mismatched_target_shape(backend):
    x = backend.asarray(np.zeros((3, 2)), np.float32)
    with pytest.raises(ShapeError, match=r"MSELoss: expected target of shape \(3, 2\) like the input, got \(3,\)"):
        nn.MSELoss()(x, backend.asarray(np.zeros(3), np.float32))


def test_loss_rejects_mismatched_target_dtype(backend):
    x = backend.asarray(np.zeros((3, 2)), np.float32)
    with pytest.raises(DTypeError, match="BCEWithLogitsLoss target: expected dtype float32, got float64"):
        nn.BCEWithLogitsLoss()(x, backend.asarray(np.zeros((3, 2)), np.float64))


def test_loss_rejects_target_from_another_backend():
    x = xb.asarray(np.zeros((3, 2), dtype=np.float32), xb.resolve("array_api_strict"))
    with pytest.raises(DeviceError, match="MSELoss target: expected an array on array_api_strict, got numpy.ndarray"):
        nn.MSELoss()(x, np.zeros((3, 2), dtype=np.float32))


def test_loss_rejects_integer_logits(backend):
    with pytest.raises(DTypeError, match="CrossEntropyLoss: expected floating logits, got int64"):
        nn.CrossEntropyLoss()(backend.asarray(np.zeros((2, 3), dtype=np.int64)), backend.asarray(np.zeros(2, dtype=np.int64)))


def test_bad_reduction_and_smoothing():
    with pytest.raises(ValueError, match=r"MSELoss: expected reduction in \('mean', 'sum', 'none'\), got 'avg'"):
        nn.MSELoss(reduction="avg")
    with pytest.raises(ValueError, match=r"CrossEntropyLoss: expected label_smoothing in \[0, 1\], got 1.5"):
        nn.CrossEntropyLoss(label_smoothing=1.5)


def test_cross_entropy_gradient_has_no_subnormal_numbers(backend):
    z = backend.asarray(np.array([[0.0, -95.0, 30.0], [120.0, 0.0, 1.0]]), np.float32)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(z, backend.asarray(np.array([2, 0])))
    grad = np.abs(xb.to_numpy(loss_fn.backward()))
    tiny = np.finfo(np.float32).smallest_normal
    assert not np.any((grad > 0) & (grad < tiny))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_compiled_cross_entropy_equals_the_one_hot_formula(rng, dtype, reduction):
    """On NumPy, integer labels take one compiled pass per direction (xpnn.kernels.numba_losses); it
    agrees with the portable formula (the same loss fed one-hot rows) to the latter's float32
    rounding of logits - logsumexp, with and without an upstream gradient, on transposed logits too."""
    z = (rng.normal(size=(10, 37)) * 30).astype(dtype)
    y = rng.integers(0, 10, size=37)
    upstream = rng.normal(size=37).astype(dtype) if reduction == "none" else dtype(0.5)
    fused, portable = nn.CrossEntropyLoss(reduction=reduction), nn.CrossEntropyLoss(reduction=reduction)
    for logits in (z.T, np.ascontiguousarray(z.T)):
        a, b = fused(logits, y), portable(logits, np.eye(10, dtype=dtype)[y])
        assert fused._labels_backward is not None and portable._labels_backward is None
        tol = 4 * float(np.spacing(np.abs(z).max()))  # the portable log-softmax's rounding at |z|
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
        for grad in (None, upstream):
            ga, gb = fused.backward(grad), portable.backward(grad)
            assert ga.dtype == gb.dtype == dtype
            np.testing.assert_allclose(ga, gb, rtol=tol, atol=tol)


def test_cross_entropy_nan_logit_makes_its_row_nan(backend):
    z = backend.asarray(np.array([[0.0, np.nan, 1.0], [0.0, 1.0, 2.0]]), np.float32)
    loss_fn = nn.CrossEntropyLoss(reduction="none")
    loss = xb.to_numpy(loss_fn(z, backend.asarray(np.array([0, 2]))))
    grad = xb.to_numpy(loss_fn.backward())
    assert np.isnan(loss[0]) and np.all(np.isnan(grad[0]))
    assert np.isfinite(loss[1]) and np.all(np.isfinite(grad[1]))

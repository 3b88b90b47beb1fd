"""Issue 16's losses (L1Loss, SmoothL1Loss, HuberLoss, KLDivLoss): float64 finite-difference
gradients, values and input gradients against PyTorch for every reduction (large errors and
KLDivLoss's zero targets included), the empty-input rules, and bad input with its message."""

import warnings

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ConfigError, DeviceError, DTypeError, ShapeError

from gradcheck import check_loss

# (loss name, constructor arguments); KLDivLoss gets log-probabilities and a distribution
LOSSES = [
    ("L1Loss", {}), ("SmoothL1Loss", {}), ("SmoothL1Loss", dict(beta=0.5)), ("SmoothL1Loss", dict(beta=0.0)),
    ("HuberLoss", {}), ("HuberLoss", dict(delta=2.5)), ("KLDivLoss", {}), ("KLDivLoss", dict(log_target=True)),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in args.items())}" if args else name for name, args in LOSSES]


def _reductions(name):
    return ["mean", "sum", "none"] + (["batchmean"] if name == "KLDivLoss" else [])


CASES = [pytest.param(name, args, r, id=f"{i}-{r}") for (name, args), i in zip(LOSSES, IDS) for r in _reductions(name)]


def _pair(name, args, rng, shape=(4, 3), scale=1.0):
    """(input, target) on the host: values and targets, or KLDivLoss's log-probabilities and a
    distribution (a zero in it) or its log."""
    if name != "KLDivLoss":
        return rng.normal(size=shape) * scale, rng.normal(size=shape) * scale
    logits = rng.normal(size=shape)
    log_p = logits - np.log(np.exp(logits).sum(axis=-1, keepdims=True))
    q = rng.uniform(0.05, 1.0, size=shape)
    q.reshape(-1)[1] = 0.0
    q /= q.sum(axis=-1, keepdims=True)
    if args.get("log_target"):
        with np.errstate(divide="ignore"):
            q = np.log(np.maximum(q, 1e-3))
    return log_p, q


def _away_from_kinks(name, args, x, t):
    """Move input elements off the points where the loss is not differentiable."""
    kink = {"L1Loss": 0.0, "SmoothL1Loss": args.get("beta", 1.0), "HuberLoss": args.get("delta", 1.0)}.get(name)
    if kink is None:
        return x
    d = x - t
    bad = (np.abs(np.abs(d) - kink) < 1e-3) | (np.abs(d) < 1e-3)
    return np.where(bad, t + 0.3, x)


@pytest.mark.parametrize("name, args, reduction", CASES)
def test_gradients(backend, rng, name, args, reduction):
    x, t = _pair(name, args, rng)
    x = _away_from_kinks(name, args, x * 2, t)
    upstream = rng.normal(size=x.shape) if reduction == "none" else None
    loss_fn = getattr(nn, name)(reduction=reduction, **args)
    check_loss(loss_fn, x, backend.asarray(t, np.float64), backend, upstream=upstream)


def _torch_loss(name, args, reduction):
    torch = pytest.importorskip("torch")
    return getattr(torch.nn, name)(reduction=reduction, **args)


def _compare(backend, name, args, reduction, x, t, dtype, rtol, atol=0.0):
    torch = pytest.importorskip("torch")
    loss_fn = getattr(nn, name)(reduction=reduction, **args)
    value = loss_fn(backend.asarray(x, dtype), backend.asarray(t, dtype))
    upstream = np.random.default_rng(5).normal(size=x.shape) if reduction == "none" else np.array(0.75)
    grad = loss_fn.backward(backend.asarray(upstream, dtype))
    assert value.dtype == grad.dtype == getattr(backend.xp, np.dtype(dtype).name)
    tdtype = getattr(torch, np.dtype(dtype).name)
    tx = torch.tensor(x, dtype=tdtype, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KLDivLoss's "mean" warning
        expected = _torch_loss(name, args, reduction)(tx, torch.tensor(t, dtype=tdtype))
    expected.backward(torch.tensor(upstream, dtype=tdtype))
    assert tuple(value.shape) == tuple(expected.shape)
    np.testing.assert_allclose(xb.to_numpy(value), expected.detach().numpy(), rtol=rtol, atol=atol)
    np.testing.assert_allclose(xb.to_numpy(grad), tx.grad.numpy(), rtol=rtol, atol=atol)
    # backward() without a gradient is the loss's own scale (1 for each output element)
    if reduction != "none":
        loss_fn(backend.asarray(x, dtype), backend.asarray(t, dtype))
        np.testing.assert_allclose(xb.to_numpy(loss_fn.backward()), tx.grad.numpy() / 0.75, rtol=rtol, atol=atol)


@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-6)])
@pytest.mark.parametrize("name, args, reduction", CASES)
def test_matches_torch(backend, rng, name, args, reduction, dtype, rtol):
    x, t = _pair(name, args, rng, shape=(5, 4, 3), scale=2.0)
    _compare(backend, name, args, reduction, x, t, dtype, rtol, atol=1e-7 if dtype == np.float32 else 1e-15)


@pytest.mark.parametrize("scale", [1e4, 1e18, 1e30])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, args", LOSSES[:6], ids=IDS[:6])
def test_large_errors_match_torch_without_overflow(backend, rng, name, args, dtype, scale):
    x, t = _pair(name, args, rng, shape=(6, 2), scale=scale)
    x.reshape(-1)[:3] = t.reshape(-1)[:3] + [0.25, -0.25, 0.0]  # small errors beside the large ones
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for reduction in ("mean", "sum", "none"):
            _compare(backend, name, args, reduction, x, t, dtype, rtol=2e-6 if dtype == np.float32 else 1e-12)


def test_smooth_l1_with_beta_zero_is_l1(backend, rng):
    x = backend.asarray(rng.normal(size=(3, 4)), np.float64)
    t = backend.asarray(rng.normal(size=(3, 4)), np.float64)
    a, b = nn.SmoothL1Loss(beta=0), nn.L1Loss()
    assert float(a(x, t)) == float(b(x, t))
    np.testing.assert_array_equal(xb.to_numpy(a.backward()), xb.to_numpy(b.backward()))
    zero = nn.SmoothL1Loss(beta=0, reduction="sum")
    zero(x, x)
    assert np.all(xb.to_numpy(zero.backward()) == 0)  # sign(0) = 0, as PyTorch


def test_huber_is_delta_times_smooth_l1(backend, rng):
    x = backend.asarray(rng.normal(size=(3, 4)) * 3, np.float64)
    t = backend.asarray(rng.normal(size=(3, 4)), np.float64)
    huber, smooth = nn.HuberLoss(delta=1.5), nn.SmoothL1Loss(beta=1.5)
    assert float(huber(x, t)) == pytest.approx(1.5 * float(smooth(x, t)), rel=1e-14)
    np.testing.assert_allclose(xb.to_numpy(huber.backward()), 1.5 * xb.to_numpy(smooth.backward()), rtol=1e-14)


def test_kl_div_batchmean_is_the_mean_row_divergence(backend, rng):
    logits = rng.normal(size=(5, 4))
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    q = rng.dirichlet(np.ones(4), size=5)
    value = nn.KLDivLoss(reduction="batchmean")(backend.asarray(log_p), backend.asarray(q))
    assert float(value) == pytest.approx(np.mean(np.sum(q * (np.log(q) - log_p), axis=1)), rel=1e-13)
    log_value = nn.KLDivLoss(reduction="batchmean", log_target=True)(backend.asarray(log_p), backend.asarray(np.log(q)))
    assert float(log_value) == pytest.approx(float(value), rel=1e-13)
    mean = nn.KLDivLoss()(backend.asarray(log_p), backend.asarray(q))
    assert float(mean) == pytest.approx(float(value) / 4, rel=1e-13)  # "mean": over all 20 elements


def test_kl_div_zero_targets_contribute_nothing_and_negative_ones_nan(backend):
    log_p = backend.asarray(np.log([[0.5, 0.25, 0.25]]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no log(0) or log(-1) warning on NumPy
        zero = nn.KLDivLoss(reduction="none")(log_p, backend.asarray(np.array([[1.0, 0.0, 0.0]])))
        negative = nn.KLDivLoss(reduction="none")(log_p, backend.asarray(np.array([[1.0, -0.5, 0.0]])))
    np.testing.assert_allclose(xb.to_numpy(zero), [[np.log(2), 0.0, 0.0]], rtol=1e-15)
    assert np.isnan(xb.to_numpy(negative)[0, 1]) and xb.to_numpy(negative)[0, 2] == 0


def test_kl_div_batchmean_of_one_distribution_and_a_scalar(backend):
    torch = pytest.importorskip("torch")
    x, t = np.log([0.2, 0.3, 0.5]), np.array([0.1, 0.6, 0.3])
    _compare(backend, "KLDivLoss", {}, "batchmean", x, t, np.float64, 1e-13)  # divided by 3, the size of dimension 0
    _compare(backend, "KLDivLoss", {}, "batchmean", np.array(-0.5), np.array(0.25), np.float64, 1e-13)
    assert torch  # compared with PyTorch above


@pytest.mark.parametrize("name, args", LOSSES, ids=IDS)
def test_empty_input(backend, name, args):
    x = backend.asarray(np.zeros((0, 3)), np.float32)
    reductions = ["mean"] + (["batchmean"] if name == "KLDivLoss" else [])
    for reduction in reductions:
        with pytest.raises(ShapeError, match=rf"{name}: cannot average over an empty input of shape \(0, 3\); expected at least one element"):
            getattr(nn, name)(reduction=reduction, **args)(x, x)
    loss_fn = getattr(nn, name)(reduction="sum", **args)
    assert float(loss_fn(x, x)) == 0.0 and tuple(loss_fn.backward().shape) == (0, 3)
    assert tuple(getattr(nn, name)(reduction="none", **args)(x, x).shape) == (0, 3)


@pytest.mark.parametrize("name, args", LOSSES, ids=IDS)
def test_bad_input_is_refused_with_its_message(backend, name, args):
    loss_fn = getattr(nn, name)(**args)
    x = backend.asarray(np.zeros((3, 2)), np.float32)
    with pytest.raises(ShapeError, match=rf"{name}: expected target of shape \(3, 2\) like the input, got \(3,\)"):
        loss_fn(x, backend.asarray(np.zeros(3), np.float32))
    with pytest.raises(DTypeError, match=rf"{name} target: expected dtype float32, got float64"):
        loss_fn(x, backend.asarray(np.zeros((3, 2)), np.float64))
    with pytest.raises(DTypeError, match=rf"{name}: expected a floating input, got int64"):
        loss_fn(backend.asarray(np.zeros((3, 2)), np.int64), x)


def test_target_from_another_backend_is_refused():
    x = xb.asarray(np.zeros((3, 2), dtype=np.float32), xb.resolve("array_api_strict"))
    with pytest.raises(DeviceError, match="HuberLoss target: expected an array on array_api_strict, got numpy.ndarray"):
        nn.HuberLoss()(x, np.zeros((3, 2), dtype=np.float32))


@pytest.mark.parametrize("make, message", [
    (lambda: nn.L1Loss(reduction="batchmean"), r"L1Loss: expected reduction in \('mean', 'sum', 'none'\), got 'batchmean'"),
    (lambda: nn.HuberLoss(reduction="avg"), r"HuberLoss: expected reduction in \('mean', 'sum', 'none'\), got 'avg'"),
    (lambda: nn.KLDivLoss(reduction="batch"), r"KLDivLoss: expected reduction in \('mean', 'batchmean', 'sum', 'none'\), got 'batch'"),
    (lambda: nn.SmoothL1Loss(beta=-1), "SmoothL1Loss: expected beta >= 0, got -1"),
    (lambda: nn.SmoothL1Loss(beta="1"), "SmoothL1Loss: expected beta to be a finite number, got '1'"),
    (lambda: nn.HuberLoss(delta=0), "HuberLoss: expected delta > 0, got 0"),
    (lambda: nn.HuberLoss(delta=-0.5), "HuberLoss: expected delta > 0, got -0.5"),
    (lambda: nn.HuberLoss(delta=float("inf")), "HuberLoss: expected delta to be a finite number, got inf"),
    (lambda: nn.KLDivLoss(log_target=1), "KLDivLoss: expected log_target to be a bool, got 1"),
])
def test_bad_arguments_are_refused(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_backward_before_forward_and_wrong_gradient_shape():
    from xpnn.errors import CallOrderError

    loss_fn = nn.L1Loss(reduction="none")
    with pytest.raises(CallOrderError, match=r"L1Loss\(reduction='none'\): backward called before forward"):
        loss_fn.backward()
    x = np.zeros((3, 2), dtype=np.float32)
    loss_fn(x, x)
    with pytest.raises(ShapeError, match=r"L1Loss\(reduction='none'\): expected a gradient of shape \(3, 2\)"):
        loss_fn.backward(np.ones(3, dtype=np.float32))


def test_config_round_trip_keeps_the_arguments():
    for loss_fn in (nn.L1Loss("sum"), nn.SmoothL1Loss("none", beta=0.25), nn.HuberLoss(delta=3.0), nn.KLDivLoss("batchmean", log_target=True)):
        rebuilt = nn.from_config(loss_fn.get_config())
        assert repr(rebuilt) == repr(loss_fn) and rebuilt.get_config() == loss_fn.get_config()

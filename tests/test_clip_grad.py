"""nn.utils.clip_grad_norm_ and clip_grad_value_ (issue 16): equal to torch.nn.utils on every
backend and norm type, in place, the total norm returned as a 0-d device array with no host
conversion (array_api_strict counts them), bad arguments named; the Trainer's clip_grad_norm."""

import math

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import nn, optim
from xpnn.errors import ArgumentTypeError, ConfigError, NonFiniteLossError

from test_host_syncs import _setup, counting_host_conversions

SHAPES = [(3, 4), (5,), (2, 2, 3)]


def _params(backend, grads, dtype=np.float64):
    params = []
    for g in grads:
        p = nn.Parameter(backend.asarray(np.zeros(g.shape), dtype))
        p.grad[...] = backend.asarray(g, dtype)
        params.append(p)
    return params


def _torch_params(torch, grads):
    params = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype))
        p.grad = torch.from_numpy(g.copy())
        params.append(p)
    return params


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("norm_type", [2.0, 1, 3.5, 0.5, math.inf, "inf"])
@pytest.mark.parametrize("max_norm", [0.3, 1e3])
def test_clip_grad_norm_matches_torch(backend, norm_type, max_norm, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    grads = [rng.normal(size=s).astype(dtype) for s in SHAPES]
    ours = _params(backend, grads, dtype)
    theirs = _torch_params(torch, grads)
    total = nn.utils.clip_grad_norm_(ours, max_norm, norm_type)
    expected = torch.nn.utils.clip_grad_norm_(theirs, max_norm, norm_type)
    assert isinstance(total, xb.array_type(backend.xp)) and total.shape == () and xb.device_of(total) == xb.device_of(ours[0].data)
    tol = dict(rtol=1e-12, atol=0) if dtype == np.float64 else dict(rtol=2e-6, atol=1e-7)
    np.testing.assert_allclose(xb.to_numpy(total), expected.numpy(), **tol)
    for p, q in zip(ours, theirs):
        np.testing.assert_allclose(xb.to_numpy(p.grad), q.grad.numpy(), **tol)


def test_clip_grad_norm_clips_to_max_norm_and_leaves_small_gradients(backend):
    grads = [np.full((2, 2), 3.0), np.full((1,), 4.0)]  # total 2-norm sqrt(4 * 9 + 16) = sqrt(52)
    params = _params(backend, grads)
    total = nn.utils.clip_grad_norm_(params, 1.0)
    assert float(total) == pytest.approx(math.sqrt(52))
    clipped = math.sqrt(sum(float(np.sum(xb.to_numpy(p.grad) ** 2)) for p in params))
    assert clipped == pytest.approx(1.0, rel=1e-5)
    small = _params(backend, [np.full((3,), 0.1)])
    before = xb.to_numpy(small[0].grad).copy()
    nn.utils.clip_grad_norm_(small[0], 10.0)  # one Parameter is accepted
    np.testing.assert_array_equal(xb.to_numpy(small[0].grad), before)


def test_clip_grad_norm_scales_in_place_and_works_through_zero_grad(backend):
    params = _params(backend, [np.full((4,), 2.0)])
    buffer = params[0].grad
    nn.utils.clip_grad_norm_(params, 1.0)
    assert params[0].grad is buffer
    params[0].zero_grad()  # marked zero: read as zeros
    assert float(nn.utils.clip_grad_norm_(params, 1.0)) == 0.0


def test_clip_grad_norm_of_float16_gradients_in_float32():
    params = _params(_Numpy(), [np.full((3,), 300.0)], np.float16)
    total = nn.utils.clip_grad_norm_(params, 1.0)
    assert total.dtype == np.float32 and float(total) == pytest.approx(300 * math.sqrt(3), rel=1e-6)
    assert params[0].grad.dtype == np.float16
    np.testing.assert_allclose(params[0].grad.astype(np.float32), np.full(3, 1 / math.sqrt(3)), rtol=1e-3)


class _Numpy:
    name = "numpy"

    @staticmethod
    def asarray(host, dtype=None):
        return np.asarray(host, dtype=dtype)


@pytest.mark.parametrize("clip_value", [0.0, 0.5, 10.0])
def test_clip_grad_value_matches_torch(backend, clip_value):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    grads = [rng.normal(size=s) for s in SHAPES]
    ours = _params(backend, grads)
    theirs = _torch_params(torch, grads)
    assert nn.utils.clip_grad_value_(ours, clip_value) is None
    torch.nn.utils.clip_grad_value_(theirs, clip_value)
    for p, q in zip(ours, theirs):
        np.testing.assert_array_equal(xb.to_numpy(p.grad), q.grad.numpy())


def test_clipping_converts_nothing_to_host_on_array_api_strict(monkeypatch):
    strict = pytest.importorskip("array_api_strict")
    params = _params(_Strict(strict), [np.ones((3, 4)) * 5, np.ones((7,))])
    with counting_host_conversions(monkeypatch, type(strict.zeros(1))) as seen:
        total = nn.utils.clip_grad_norm_(params, 1.0)
        nn.utils.clip_grad_norm_(params, 0.5, norm_type=math.inf)
        nn.utils.clip_grad_value_(params, 0.1)
    assert seen == [], f"host conversions while clipping: {seen}"
    assert float(total) == pytest.approx(math.sqrt(12 * 25 + 7))


class _Strict:
    name = "array_api_strict"

    def __init__(self, strict):
        self.xp = strict

    def asarray(self, host, dtype=None):
        return self.xp.asarray(np.asarray(host, dtype=dtype))


def test_error_if_nonfinite():
    params = _params(_Numpy(), [np.array([1.0, np.nan])])
    with pytest.raises(NonFiniteLossError, match="clip_grad_norm_: the total norm of order 2.0 of the gradients is non-finite"):
        nn.utils.clip_grad_norm_(params, 1.0, error_if_nonfinite=True)
    total = nn.utils.clip_grad_norm_(params, 1.0)  # as PyTorch: scaled by the NaN
    assert np.isnan(total) and np.isnan(params[0].grad).all()


def test_no_parameters_give_a_zero_norm():
    assert nn.utils.clip_grad_norm_([], 1.0) == 0.0


@pytest.mark.parametrize("call, error, message", [
    (lambda p: nn.utils.clip_grad_norm_(p, -1.0), ConfigError, "clip_grad_norm_: expected max_norm to be a finite number >= 0, got -1.0"),
    (lambda p: nn.utils.clip_grad_norm_(p, float("nan")), ConfigError, "clip_grad_norm_: expected max_norm to be a finite number >= 0, got nan"),
    (lambda p: nn.utils.clip_grad_norm_(p, "1"), ConfigError, "clip_grad_norm_: expected max_norm to be a finite number >= 0, got '1'"),
    (lambda p: nn.utils.clip_grad_norm_(p, 1.0, norm_type=0), ConfigError, "clip_grad_norm_: expected norm_type to be a number > 0 or inf, got 0"),
    (lambda p: nn.utils.clip_grad_norm_(p, 1.0, norm_type="fro"), ConfigError, "clip_grad_norm_: expected norm_type to be a number > 0 or inf, got 'fro'"),
    (lambda p: nn.utils.clip_grad_norm_([np.zeros(2)], 1.0), ArgumentTypeError, "clip_grad_norm_: expected xpnn.nn.Parameter objects, got ndarray"),
    (lambda p: nn.utils.clip_grad_value_(p, -0.1), ConfigError, "clip_grad_value_: expected clip_value to be a finite number >= 0, got -0.1"),
    (lambda p: nn.utils.clip_grad_value_([1.0], 0.1), ArgumentTypeError, "clip_grad_value_: expected xpnn.nn.Parameter objects, got float"),
])
def test_bad_arguments(call, error, message):
    with pytest.raises(error, match=message):
        call(_params(_Numpy(), [np.ones(2)]))


def test_trainer_clips_between_backward_and_step(monkeypatch):
    from xpnn.train import Trainer

    model, opt, x, y = _setup("mlp", "cpu", lambda params: optim.SGD(params, lr=0.1))
    order = []
    real_clip, real_step = nn.utils.clip_grad_norm_, opt.step
    import xpnn.train.trainer as trainer_module

    def clip(params, max_norm):
        order.append(("clip", max_norm, len(params)))
        return real_clip(params, max_norm)

    monkeypatch.setattr(trainer_module, "clip_grad_norm_", clip)
    monkeypatch.setattr(opt, "step", lambda: order.append("step") or real_step())
    Trainer(model, opt, clip_grad_norm=0.25, verbose=False).fit((x, y), epochs=1, batch_size=4)
    assert order == [("clip", 0.25, len(list(model.parameters()))), "step"] * 2


def test_trainer_with_clipping_takes_the_clipped_step():
    from xpnn.train import Trainer

    model, opt, x, y = _setup("mlp", "cpu", lambda params: optim.SGD(params, lr=0.1))
    twin, twin_opt, _, _ = _setup("mlp", "cpu", lambda params: optim.SGD(params, lr=0.1))
    Trainer(model, opt, clip_grad_norm=0.01, verbose=False).fit((x, y), epochs=1, batch_size=8, shuffle=False)
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(twin(x), y)
    twin_opt.zero_grad()
    twin.backward_params(loss_fn.backward())
    nn.utils.clip_grad_norm_(twin.parameters(), 0.01)
    twin_opt.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("value", [0, -1.0, float("inf"), "1", True])
def test_trainer_refuses_a_bad_clip_grad_norm(value):
    from xpnn.train import Trainer

    model, opt, _, _ = _setup("mlp", "cpu", lambda params: optim.SGD(params, lr=0.1))
    with pytest.raises(ConfigError, match=f"Trainer: expected clip_grad_norm to be None or a finite number > 0, got {value!r}"):
        Trainer(model, opt, clip_grad_norm=value)


def test_cli_refuses_a_bad_clip_grad_norm(capsys):
    from xpnn import cli

    assert cli.main(["train", "--clip-grad-norm", "0"]) == 2
    assert "argument --clip-grad-norm: expected a positive number, got '0'" in capsys.readouterr().err

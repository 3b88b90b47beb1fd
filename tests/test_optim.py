"""Optimizers and schedules: each checked step by step against its rule written out by hand
(and against torch.optim when PyTorch is installed), on every backend."""

import math

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import nn, optim
from xpnn.errors import ArgumentTypeError, CheckpointError, ConfigError

STEPS = 6


def _grads(rng, shape):
    return [rng.normal(size=shape) for _ in range(STEPS)]


def _run(backend, make_opt, p0, grads, dtype=np.float64):
    """Apply ``grads`` one after another through an xpnn optimizer; returns each step's weights."""
    param = nn.Parameter(backend.asarray(p0.copy(), dtype))
    opt = make_opt([param])
    history = []
    for g in grads:
        opt.zero_grad()
        param.grad += backend.asarray(g, dtype)
        opt.step()
        history.append(xb.to_numpy(param.data).astype(np.float64))
    return history


def sgd_rule(p, grads, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    out, buf = [], None
    for g in grads:
        d = g + weight_decay * p
        if momentum:
            buf = d.copy() if buf is None else momentum * buf + (1 - dampening) * d
            d = d + momentum * buf if nesterov else buf
        p = p - lr * d
        out.append(p)
    return out


def adam_rule(p, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, decoupled=False):
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    vmax = np.zeros_like(p)
    out = []
    for t, g in enumerate(grads, start=1):
        if decoupled:
            p = p * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * p
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        vmax = np.maximum(vmax, v)
        m_hat = m / (1 - betas[0] ** t)
        v_hat = (vmax if amsgrad else v) / (1 - betas[1] ** t)
        p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
        out.append(p)
    return out


def rmsprop_rule(p, grads, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
    sq = np.zeros_like(p)
    mean = np.zeros_like(p)
    buf = np.zeros_like(p)
    out = []
    for g in grads:
        g = g + weight_decay * p
        sq = alpha * sq + (1 - alpha) * g * g
        mean = alpha * mean + (1 - alpha) * g
        avg = np.sqrt(sq - mean * mean if centered else sq) + eps
        if momentum:
            buf = momentum * buf + g / avg
            p = p - lr * buf
        else:
            p = p - lr * g / avg
        out.append(p)
    return out


CASES = [
    ("sgd", lambda ps: optim.SGD(ps, lr=0.1), lambda p, g: sgd_rule(p, g, 0.1)),
    ("sgd-momentum", lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
     lambda p, g: sgd_rule(p, g, 0.1, 0.9, 0.1, 0.01)),
    ("sgd-nesterov", lambda ps: optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True), lambda p, g: sgd_rule(p, g, 0.05, 0.8, nesterov=True)),
    ("adam", lambda ps: optim.Adam(ps, lr=0.01), lambda p, g: adam_rule(p, g, 0.01)),
    ("adam-wd-amsgrad", lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, amsgrad=True),
     lambda p, g: adam_rule(p, g, 0.01, (0.8, 0.95), 1e-6, 0.1, True)),
    ("adamw", lambda ps: optim.AdamW(ps, lr=0.01), lambda p, g: adam_rule(p, g, 0.01, weight_decay=0.01, decoupled=True)),
    ("rmsprop", lambda ps: optim.RMSprop(ps, lr=0.01), lambda p, g: rmsprop_rule(p, g, 0.01)),
    ("rmsprop-centered-momentum", lambda ps: optim.RMSprop(ps, lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01),
     lambda p, g: rmsprop_rule(p, g, 0.01, 0.9, 1e-8, 0.01, 0.5, True)),
]


@pytest.mark.parametrize("name, make_opt, rule", CASES, ids=[c[0] for c in CASES])
def test_optimizer_matches_its_rule(backend, rng, name, make_opt, rule):
    p0 = rng.normal(size=(3, 4))
    grads = _grads(rng, (3, 4))
    expected = rule(p0.copy(), grads)
    got64 = _run(backend, make_opt, p0, grads, np.float64)
    got32 = _run(backend, make_opt, p0, grads, np.float32)
    for step, (e, a, b) in enumerate(zip(expected, got64, got32)):
        np.testing.assert_allclose(a, e, rtol=1e-12, atol=1e-12, err_msg=f"float64 step {step}")
        np.testing.assert_allclose(b, e, rtol=2e-5, atol=2e-6, err_msg=f"float32 step {step}")


@pytest.mark.parametrize("name, make_opt, rule", CASES, ids=[c[0] for c in CASES])
def test_optimizer_matches_torch(rng, name, make_opt, rule):
    torch = pytest.importorskip("torch")
    torch_opts = {
        "sgd": lambda ps: torch.optim.SGD(ps, lr=0.1),
        "sgd-momentum": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
        "sgd-nesterov": lambda ps: torch.optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True),
        "adam": lambda ps: torch.optim.Adam(ps, lr=0.01),
        "adam-wd-amsgrad": lambda ps: torch.optim.Adam(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.1, amsgrad=True),
        "adamw": lambda ps: torch.optim.AdamW(ps, lr=0.01),
        "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=0.01),
        "rmsprop-centered-momentum": lambda ps: torch.optim.RMSprop(ps, lr=0.01, alpha=0.9, momentum=0.5, centered=True, weight_decay=0.01),
    }
    p0 = rng.normal(size=(5, 3)).astype(np.float32)
    grads = [g.astype(np.float32) for g in _grads(rng, (5, 3))]
    ours = nn.Parameter(p0.copy())
    opt = make_opt([ours])
    theirs = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    topt = torch_opts[name]([theirs])
    for g in grads:
        opt.zero_grad()
        ours.grad += g
        opt.step()
        theirs.grad = torch.from_numpy(g.copy())
        topt.step()
        np.testing.assert_allclose(ours.data, theirs.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_defaults_are_torch_defaults():
    p = [nn.Parameter(np.zeros(2, dtype=np.float32))]
    adam = optim.Adam(p).defaults
    assert adam["betas"] == (0.9, 0.999) and adam["eps"] == 1e-8 and adam["lr"] == 1e-3 and adam["amsgrad"] is False
    assert optim.AdamW(p).defaults["weight_decay"] == 1e-2
    sgd = optim.SGD(p).defaults
    assert sgd["momentum"] == 0 and sgd["dampening"] == 0 and sgd["nesterov"] is False
    rms = optim.RMSprop(p).defaults
    assert rms["lr"] == 1e-2 and rms["alpha"] == 0.99 and rms["eps"] == 1e-8 and rms["centered"] is False


def test_optimizer_sees_every_new_gradient_and_updates_in_place(backend):
    param = nn.Parameter(backend.asarray(np.ones(3), np.float32))
    data = param.data
    opt = optim.SGD([param], lr=0.5)
    for k in range(1, 4):
        opt.zero_grad()
        param.grad += backend.asarray(np.full(3, float(k)), np.float32)
        opt.step()
    assert param.data is data, "the update must be in place"
    np.testing.assert_allclose(xb.to_numpy(param.data), 1 - 0.5 * (1 + 2 + 3))


def test_state_dict_round_trip_continues_identically(backend, rng):
    p0 = rng.normal(size=(4,))
    grads = _grads(rng, (4,))
    full = _run(backend, lambda ps: optim.Adam(ps, lr=0.05, amsgrad=True), p0, grads)

    param = nn.Parameter(backend.asarray(p0.copy(), np.float64))
    first = optim.Adam([param], lr=0.05, amsgrad=True)
    for g in grads[:3]:
        first.zero_grad()
        param.grad += backend.asarray(g, np.float64)
        first.step()
    saved = first.state_dict()
    assert all(type(v) is np.ndarray for v in saved["state"][0].values() if hasattr(v, "shape"))
    resumed_param = nn.Parameter(backend.asarray(xb.to_numpy(param.data), np.float64))
    second = optim.Adam([resumed_param], lr=0.9)
    second.load_state_dict(saved)
    assert second.param_groups[0]["lr"] == 0.05
    for g in grads[3:]:
        second.zero_grad()
        resumed_param.grad += backend.asarray(g, np.float64)
        second.step()
    np.testing.assert_array_equal(xb.to_numpy(resumed_param.data), full[-1])


def test_state_follows_parameters_to_another_device(rng):
    model = nn.Linear(3, 2)
    opt = optim.Adam(model.parameters(), lr=0.1)
    model.weight.grad += 1.0
    opt.step()
    model.to("array_api_strict")
    opt.step()
    strict = xb.array_type(xb.resolve("array_api_strict"))
    assert all(type(v) is strict for st in opt.state.values() for v in st.values() if hasattr(v, "shape"))


def test_load_state_dict_rejects_another_model():
    a = optim.Adam([nn.Parameter(np.zeros(2, dtype=np.float32))])
    b = optim.Adam([nn.Parameter(np.zeros(2, dtype=np.float32)), nn.Parameter(np.zeros(3, dtype=np.float32))])
    with pytest.raises(CheckpointError, match="Adam.load_state_dict: the saved parameter groups do not match"):
        a.load_state_dict(b.state_dict())


def test_param_groups_have_their_own_learning_rates():
    fast = nn.Parameter(np.zeros(1, dtype=np.float32))
    slow = nn.Parameter(np.zeros(1, dtype=np.float32))
    opt = optim.SGD([{"params": [fast], "lr": 1.0}, {"params": [slow]}], lr=0.1)
    fast.grad += 1.0
    slow.grad += 1.0
    opt.step()
    assert float(fast.data[0]) == -1.0 and float(slow.data[0]) == pytest.approx(-0.1)


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.SGD(p, lr=-1), "SGD: expected lr to be a finite number >= 0, got -1"),
    (lambda p: optim.SGD(p, lr=float("nan")), "SGD: expected lr to be a finite number >= 0, got nan"),
    (lambda p: optim.Adam(p, lr=float("inf")), "Adam: expected lr to be a finite number >= 0, got inf"),
    (lambda p: optim.RMSprop(p, lr="fast"), "RMSprop: expected lr to be a finite number >= 0, got 'fast'"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov="yes"), "SGD: expected nesterov to be True or False, got 'yes'"),
    (lambda p: optim.SGD([{"params": p, "lr": -0.5}], lr=0.1), "SGD param group 0: expected lr to be a finite number >= 0, got -0.5"),
    (lambda p: optim.SGD(p, lr=0.1, nesterov=True), "SGD: nesterov needs momentum > 0 and dampening 0, got momentum=0.0, dampening=0.0"),
    (lambda p: optim.Adam(p, betas=(1.0, 0.999)), r"Adam: expected betas to be a pair of numbers in \[0, 1\), got \(1.0, 0.999\)"),
    (lambda p: optim.Adam(p, betas=0.9), r"Adam: expected betas to be a pair of numbers in \[0, 1\), got 0.9"),
    (lambda p: optim.AdamW(p, eps=-1e-8), "AdamW: expected eps to be a finite number >= 0, got -1e-08"),
    (lambda p: optim.RMSprop(p, momentum=-0.5), "RMSprop: expected momentum to be a finite number >= 0, got -0.5"),
    (lambda p: optim.Adam([]), "Adam: got an empty parameter list"),
])
def test_bad_hyper_parameters_are_rejected(make, message):
    with pytest.raises(ConfigError, match=message):
        make([nn.Parameter(np.zeros(2, dtype=np.float32))])


def test_non_parameters_are_rejected():
    with pytest.raises(ArgumentTypeError, match="SGD: expected xpnn.nn.Parameter objects, got ndarray"):
        optim.SGD([np.zeros(2)])


def test_a_parameter_in_two_groups_is_rejected():
    shared = nn.Parameter(np.zeros(2, dtype=np.float32))
    with pytest.raises(ConfigError, match="SGD: expected each parameter once, got parameter 0 of group 1 a second time"):
        optim.SGD([{"params": [shared]}, {"params": [shared], "lr": 1.0}], lr=0.1)


def test_a_parameter_listed_twice_in_one_group_is_rejected():
    model = nn.Linear(2, 3)
    with pytest.raises(ConfigError, match="Adam: expected each parameter once, got parameter 2 of group 0 a second time"):
        optim.Adam([model.weight, model.bias, model.weight])


def _lrs(make, epochs=8, lr=0.1):
    opt = optim.SGD([nn.Parameter(np.zeros(1, dtype=np.float32))], lr=lr)
    sched = make(opt)
    out = []
    for _ in range(epochs):
        out.append(opt.param_groups[0]["lr"])
        sched.step()
    return out, sched


def test_step_lr():
    lrs, _ = _lrs(lambda o: optim.StepLR(o, step_size=3, gamma=0.5))
    np.testing.assert_allclose(lrs, [0.1 * 0.5 ** (e // 3) for e in range(8)])


def test_cosine_annealing_lr():
    lrs, _ = _lrs(lambda o: optim.CosineAnnealingLR(o, T_max=6, eta_min=0.01))
    expected = [0.01 + 0.09 * (1 + math.cos(math.pi * e / 6)) / 2 for e in range(8)]
    np.testing.assert_allclose(lrs, expected)


def test_linear_warmup_lr():
    lrs, _ = _lrs(lambda o: optim.LinearLR(o, start_factor=0.25, total_iters=4))
    np.testing.assert_allclose(lrs, [0.1 * f for f in (0.25, 0.4375, 0.625, 0.8125, 1, 1, 1, 1)])


def test_schedules_match_torch():
    torch = pytest.importorskip("torch")
    pairs = [
        (lambda o: optim.StepLR(o, 2, 0.3), lambda o: torch.optim.lr_scheduler.StepLR(o, 2, 0.3)),
        (lambda o: optim.CosineAnnealingLR(o, 5, 0.001), lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, 5, 0.001)),
        (lambda o: optim.LinearLR(o, 0.1, 1.0, 4), lambda o: torch.optim.lr_scheduler.LinearLR(o, 0.1, 1.0, 4)),
    ]
    for ours_make, theirs_make in pairs:
        ours, _ = _lrs(ours_make, epochs=5)
        topt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = theirs_make(topt)
        theirs = []
        for _ in range(5):
            theirs.append(topt.param_groups[0]["lr"])
            topt.step()
            sched.step()
        np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_schedule_state_dict_round_trip():
    _, sched = _lrs(lambda o: optim.StepLR(o, step_size=2, gamma=0.1), epochs=3)
    state = sched.state_dict()
    assert state["last_epoch"] == 3 and "optimizer" not in state
    opt = optim.SGD([nn.Parameter(np.zeros(1, dtype=np.float32))], lr=0.1)
    fresh = optim.StepLR(opt, step_size=5, gamma=0.5)
    fresh.load_state_dict(state)
    fresh.step()
    assert fresh.last_epoch == 4 and opt.param_groups[0]["lr"] == pytest.approx(0.001)


def test_bad_schedule_arguments():
    opt = optim.SGD([nn.Parameter(np.zeros(1, dtype=np.float32))], lr=0.1)
    with pytest.raises(ConfigError, match="StepLR: expected step_size to be an int >= 1, got 0"):
        optim.StepLR(opt, 0)
    with pytest.raises(ConfigError, match="CosineAnnealingLR: expected T_max to be a finite number > 0, got 0"):
        optim.CosineAnnealingLR(opt, 0)
    with pytest.raises(ConfigError, match=r"LinearLR: expected start_factor to be a number in \(0, 1\], got 0"):
        optim.LinearLR(opt, start_factor=0)
    with pytest.raises(ConfigError, match="StepLR: expected last_epoch to be an int >= -1, got 'x'"):
        optim.StepLR(opt, 2, last_epoch="x")


@pytest.mark.parametrize("decay", [dict(l2=0.0, decay=1.0), dict(l2=0.01, decay=1.0), dict(l2=0.0, decay=0.999)], ids=["plain", "l2", "decoupled"])
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_adam_numba_kernel_equals_portable_path_bit_for_bit(rng, amsgrad, dtype, decay):
    from xpnn.kernels import numba_elementwise
    from xpnn.ops import updates

    p, g, m, v = (rng.normal(size=(70, 50)).astype(dtype) for _ in range(4))
    v = np.abs(v)
    vmax = np.abs(rng.normal(size=(70, 50)).astype(dtype)) if amsgrad else None
    fast = [a.copy() if a is not None else None for a in (p, m, v, vmax)]
    slow = [a.copy() if a is not None else None for a in (p, m, v, vmax)]
    consts = dict(beta1=0.9, beta2=0.999, scale=0.01, shifted_eps=1e-8, **decay)
    numba_elementwise.adam_update(fast[0], g, fast[1], fast[2], fast[3], **consts)
    updates.adam_update_portable(slow[0], g, slow[1], slow[2], slow[3], **consts)
    for a, b in zip(fast, slow):
        if a is not None:
            np.testing.assert_array_equal(a, b)


def test_adam_updates_a_strided_parameter_in_place(rng):
    """A parameter that is a strided view cannot go through the flat kernel: the update must still land."""
    base = rng.normal(size=(6, 8)).astype(np.float32)
    before = base.copy()
    param = nn.Parameter(base[:, ::2])
    param.grad[...] = 1.0
    optim.Adam([param], lr=0.1).step()
    np.testing.assert_allclose(base[:, ::2], before[:, ::2] - 0.1, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(base[:, 1::2], before[:, 1::2])


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_cupy_kernel_equals_portable_path(rng, amsgrad):
    cupy = pytest.importorskip("cupy")
    try:
        xb.resolve("cuda")
    except Exception as exc:
        pytest.skip(f"no GPU: {exc}")
    from xpnn.kernels import cuda_elementwise
    from xpnn.ops import updates

    host = [rng.normal(size=(33, 17)).astype(np.float32) for _ in range(5)]
    host[2] = np.abs(host[2])
    host[3] = np.abs(host[3])
    p, g, m, v, vmax = host
    fast = [cupy.asarray(a) for a in (p, m, v, vmax)]
    slow = [cupy.asarray(a) for a in (p, m, v, vmax)]
    if not amsgrad:
        fast[3] = slow[3] = None
    consts = dict(beta1=0.9, beta2=0.999, scale=0.01, shifted_eps=1e-8, l2=0.0, decay=1.0)
    cuda_elementwise.adam_update(fast[0], cupy.asarray(g), fast[1], fast[2], fast[3], **consts)
    updates.adam_update_portable(slow[0], cupy.asarray(g), slow[1], slow[2], slow[3], **consts)
    for a, b in zip(fast, slow):
        if a is not None:
            np.testing.assert_allclose(cupy.asnumpy(a), cupy.asnumpy(b), rtol=1e-6, atol=1e-7)

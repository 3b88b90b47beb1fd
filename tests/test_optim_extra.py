"""Adadelta, Adagrad, NAdam and RAdam (issue 16): step by step equal to torch.optim over 20 steps
(float64 and float32, each option), on every backend; the Numba updates bit for bit equal to the
portable ones; float16 updated in float32; state_dict round trips, resumes and all-or-nothing
checks; bad hyper-parameters; no host syncs in a training step."""

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import nn, optim
from xpnn.errors import CheckpointError, ConfigError

from test_host_syncs import _setup, _steps, counting_host_conversions

STEPS = 20

# id -> (xpnn optimizer, the torch.optim class name, the keyword arguments both take)
CASES = {
    "adadelta": (optim.Adadelta, "Adadelta", {}),
    "adadelta-options": (optim.Adadelta, "Adadelta", dict(lr=0.5, rho=0.8, eps=1e-4, weight_decay=0.1)),
    "adagrad": (optim.Adagrad, "Adagrad", {}),
    "adagrad-options": (optim.Adagrad, "Adagrad", dict(lr=0.05, lr_decay=0.1, weight_decay=0.1, initial_accumulator_value=0.3, eps=1e-6)),
    "nadam": (optim.NAdam, "NAdam", {}),
    "nadam-options": (optim.NAdam, "NAdam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, momentum_decay=0.01)),
    "nadam-decoupled": (optim.NAdam, "NAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    "radam": (optim.RAdam, "RAdam", {}),
    "radam-options": (optim.RAdam, "RAdam", dict(lr=0.01, betas=(0.7, 0.9), eps=1e-6, weight_decay=0.1)),
    "radam-decoupled": (optim.RAdam, "RAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
}


def _problem(seed, dtype, shape=(4, 5)):
    rng = np.random.default_rng(seed)
    return rng.normal(size=shape).astype(dtype), [rng.normal(size=shape).astype(dtype) for _ in range(STEPS)]


def _ours(backend, case, p0, grads, dtype, steps=None):
    cls, _, kwargs = CASES[case]
    param = nn.Parameter(backend.asarray(p0.copy(), dtype))
    opt = cls([param], **kwargs)
    history = []
    for g in grads[:steps]:
        opt.zero_grad()
        param.grad += backend.asarray(g, dtype)
        opt.step()
        history.append(xb.to_numpy(param.data).copy())
    return history, opt, param


def _theirs(torch, case, p0, grads):
    _, name, kwargs = CASES[case]
    param = torch.nn.Parameter(torch.from_numpy(p0.copy()))
    opt = getattr(torch.optim, name)([param], **kwargs)
    history = []
    for g in grads:
        param.grad = torch.from_numpy(g.copy())
        opt.step()
        history.append(param.detach().numpy().copy())
    return history, opt


@pytest.fixture
def torch64():
    """torch with float64 as its default dtype (NAdam keeps its mu_product in the default dtype)."""
    torch = pytest.importorskip("torch")
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield torch
    torch.set_default_dtype(before)


@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch_in_float64(backend, torch64, case):
    p0, grads = _problem(1, np.float64)
    ours, _, _ = _ours(backend, case, p0, grads, np.float64)
    theirs, _ = _theirs(torch64, case, p0, grads)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13, err_msg=f"{case} step {step + 1}")


@pytest.mark.parametrize("case", list(CASES))
def test_matches_torch_in_float32(backend, case):
    torch = pytest.importorskip("torch")
    p0, grads = _problem(2, np.float32)
    ours, _, _ = _ours(backend, case, p0, grads, np.float32)
    theirs, _ = _theirs(torch, case, p0, grads)
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{case} step {step + 1}")


@pytest.mark.parametrize("case", list(CASES))
def test_state_has_torchs_names(case):
    torch = pytest.importorskip("torch")
    p0, grads = _problem(3, np.float32)
    _, opt, _ = _ours(_NUMPY, case, p0, grads, np.float32, steps=2)
    _, topt = _theirs(torch, case, p0, grads[:2])
    ours, theirs = opt.state_dict(), topt.state_dict()
    assert set(ours["state"][0]) == set(theirs["state"][0])
    assert ours["state"][0]["step"] == 2
    hyper = {k: v for k, v in theirs["param_groups"][0].items() if k in opt.hyper}
    assert set(hyper) == set(opt.hyper)
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in ours["param_groups"][0].items() if k != "params"} == hyper


class _Numpy:
    name = "numpy"

    @staticmethod
    def asarray(host, dtype=None):
        return np.asarray(host, dtype=dtype)


_NUMPY = _Numpy()


@pytest.mark.parametrize("name", ["Adadelta", "Adagrad", "NAdam", "RAdam"])
def test_defaults_are_torchs(name):
    torch = pytest.importorskip("torch")
    ours = getattr(optim, name)([nn.Parameter(np.zeros(2, dtype=np.float32))]).defaults
    theirs = getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))]).defaults
    assert ours == {k: theirs[k] for k in ours}


@pytest.mark.parametrize("case", list(CASES))
def test_state_dict_round_trip_resumes_identically(backend, case):
    p0, grads = _problem(4, np.float64)
    full, _, _ = _ours(backend, case, p0, grads, np.float64)
    first, opt, param = _ours(backend, case, p0, grads, np.float64, steps=8)
    saved = opt.state_dict()
    assert all(type(v) is np.ndarray for v in saved["state"][0].values() if hasattr(v, "shape"))
    resumed = nn.Parameter(backend.asarray(xb.to_numpy(param.data), np.float64))
    cls = CASES[case][0]
    other = cls([resumed], lr=0.123)
    other.load_state_dict(saved)
    assert other.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    for g in grads[8:]:
        other.zero_grad()
        resumed.grad += backend.asarray(g, np.float64)
        other.step()
    np.testing.assert_array_equal(xb.to_numpy(resumed.data), full[-1])


def test_a_torch_state_loads_into_nadam():
    """PyTorch's layout: NAdam's state (step and mu_product as 0-d tensors) loads and continues as torch does."""
    torch = pytest.importorskip("torch")
    p0, grads = _problem(5, np.float32)
    theirs, topt = _theirs(torch, "nadam", p0, grads[:5])
    tstate = topt.state_dict()
    state = {i: {k: v.numpy() if k != "step" else int(v.item()) for k, v in entries.items()} for i, entries in tstate["state"].items()}
    groups = [{k: v for k, v in g.items() if k in optim.NAdam.hyper or k == "params"} for g in tstate["param_groups"]]
    param = nn.Parameter(theirs[-1].copy())
    opt = optim.NAdam([param])
    opt.load_state_dict({"state": state, "param_groups": groups})
    assert isinstance(opt.state[param]["mu_product"], float)
    tparam = topt.param_groups[0]["params"][0]
    for g in grads[5:]:
        opt.zero_grad()
        param.grad += g
        opt.step()
        tparam.grad = torch.from_numpy(g.copy())
        topt.step()
    np.testing.assert_allclose(param.data, tparam.detach().numpy(), rtol=1e-5, atol=1e-6)


def _stepped(cls, **kwargs):
    param = nn.Parameter(np.linspace(-1, 1, 6).reshape(2, 3))
    opt = cls([param], **kwargs)
    param.grad[...] = 0.5
    opt.step()
    return opt, param


@pytest.mark.parametrize("edit, message", [
    (lambda s: s["state"][0].pop("mu_product"), r"NAdam.load_state_dict: expected the state of parameter 0 to hold \['exp_avg', 'exp_avg_sq', 'mu_product', 'step'\]"),
    (lambda s: s["state"][0].update(mu_product=1.5), r"NAdam.load_state_dict: state 'mu_product' of parameter 0: expected a number in \[0, 1\], got 1.5"),
    (lambda s: s["state"][0].update(mu_product="x"), r"NAdam.load_state_dict: state 'mu_product' of parameter 0: expected a number in \[0, 1\], got 'x'"),
    (lambda s: s["state"][0].update(exp_avg=np.zeros((3, 2))), r"NAdam.load_state_dict: state 'exp_avg' of parameter 0: expected shape \(2, 3\), got \(3, 2\)"),
    (lambda s: s["state"][0].update(step=-1), "NAdam.load_state_dict: state 'step' of parameter 0: expected an int >= 0, got -1"),
    (lambda s: s["param_groups"][0].update(momentum_decay=-1), "NAdam.load_state_dict: param group 0: expected momentum_decay to be a finite number >= 0, got -1"),
    (lambda s: s["param_groups"][0].pop("decoupled_weight_decay"), r"NAdam.load_state_dict: param group 0 is missing \['decoupled_weight_decay'\]"),
    (lambda s: s.update({"class": "RAdam"}), "NAdam.load_state_dict: expected a state_dict saved by NAdam, got one saved by RAdam"),
])
def test_bad_states_are_refused_and_change_nothing(edit, message):
    opt, param = _stepped(optim.NAdam, lr=0.01)
    state = opt.state_dict()
    edit(state)
    before = opt.state_dict()
    with pytest.raises(CheckpointError, match=message):
        opt.load_state_dict(state)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"] and after["state"][0]["mu_product"] == before["state"][0]["mu_product"]
    np.testing.assert_array_equal(after["state"][0]["exp_avg"], before["state"][0]["exp_avg"])


@pytest.mark.parametrize("cls, message", [
    (optim.Adadelta, r"Adadelta.load_state_dict: expected the state of parameter 0 to hold \['acc_delta', 'square_avg', 'step'\]"),
    (optim.Adagrad, r"Adagrad.load_state_dict: expected the state of parameter 0 to hold \['step', 'sum'\]"),
    (optim.RAdam, r"RAdam.load_state_dict: expected the state of parameter 0 to hold \['exp_avg', 'exp_avg_sq', 'step'\]"),
])
def test_a_state_missing_an_entry_is_refused(cls, message):
    opt, _ = _stepped(cls)
    state = opt.state_dict()
    state["state"][0].pop("step")
    with pytest.raises(CheckpointError, match=message):
        opt.load_state_dict(state)


@pytest.mark.parametrize("make, message", [
    (lambda p: optim.Adadelta(p, lr=-1), "Adadelta: expected lr to be a finite number >= 0, got -1"),
    (lambda p: optim.Adadelta(p, rho=1.5), r"Adadelta: expected rho to be a number in \[0, 1\], got 1.5"),
    (lambda p: optim.Adadelta(p, eps=float("nan")), "Adadelta: expected eps to be a finite number >= 0, got nan"),
    (lambda p: optim.Adadelta(p, weight_decay=-0.1), "Adadelta: expected weight_decay to be a finite number >= 0, got -0.1"),
    (lambda p: optim.Adagrad(p, lr_decay=-1), "Adagrad: expected lr_decay to be a finite number >= 0, got -1"),
    (lambda p: optim.Adagrad(p, initial_accumulator_value=-1), "Adagrad: expected initial_accumulator_value to be a finite number >= 0, got -1"),
    (lambda p: optim.Adagrad(p, eps="tiny"), "Adagrad: expected eps to be a finite number >= 0, got 'tiny'"),
    (lambda p: optim.NAdam(p, betas=(0.9, 1.0)), r"NAdam: expected betas to be a pair of numbers in \[0, 1\), got \(0.9, 1.0\)"),
    (lambda p: optim.NAdam(p, momentum_decay=-4e-3), "NAdam: expected momentum_decay to be a finite number >= 0, got -0.004"),
    (lambda p: optim.NAdam(p, decoupled_weight_decay="yes"), "NAdam: expected decoupled_weight_decay to be True or False, got 'yes'"),
    (lambda p: optim.RAdam(p, lr=float("inf")), "RAdam: expected lr to be a finite number >= 0, got inf"),
    (lambda p: optim.RAdam(p, betas=0.9), r"RAdam: expected betas to be a pair of numbers in \[0, 1\), got 0.9"),
    (lambda p: optim.RAdam([{"params": p, "eps": -1}]), "RAdam param group 0: expected eps to be a finite number >= 0, got -1"),
    (lambda p: optim.NAdam([]), "NAdam: got an empty parameter list"),
])
def test_bad_hyper_parameters_are_rejected(make, message):
    with pytest.raises(ConfigError, match=message):
        make([nn.Parameter(np.zeros(2, dtype=np.float32))])


# ---- the compiled updates ------------------------------------------------------------------

def _portable_and_numba(name, arrays, scalars):
    from xpnn.kernels import numba_elementwise
    from xpnn.ops import updates

    fast = [a.copy() for a in arrays]
    slow = [a.copy() for a in arrays]
    getattr(numba_elementwise, f"{name}_update")(*fast, *scalars)
    getattr(updates, f"{name}_update_portable")(*slow, *scalars)
    return fast, slow


UPDATE_SCALARS = {  # the portable functions' scalars after the door folded them, (plain, with weight decay)
    "adadelta": [(1.0, 0.9, 1e-6, 0.0), (0.5, 0.8, 1e-4, 0.1)],
    "adagrad": [(0.01, 1e-10, 0.0), (0.02, 1e-6, 0.1)],
    "nadam": [(0.9, 0.999, 1e-8, 0.002, 0.0013, 0.0017, 0.0, 1.0), (0.8, 0.99, 1e-6, 0.03, 0.0013, 0.0017, 0.1, 1.0),
              (0.9, 0.999, 1e-8, 0.002, 0.0013, 0.0017, 0.0, 0.999)],
    "radam": [(0.9, 0.999, 1e-8, 0.01, True, 0.0, 1.0), (0.9, 0.999, 1e-8, 0.01, False, 0.1, 1.0), (0.8, 0.99, 1e-6, 0.02, True, 0.0, 0.999)],
}
STATE_ARRAYS = {"adadelta": 2, "adagrad": 1, "nadam": 2, "radam": 2}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name, variant", [(n, i) for n, v in UPDATE_SCALARS.items() for i in range(len(v))])
def test_numba_update_equals_portable_bit_for_bit(rng, name, variant, dtype):
    p, g = (rng.normal(size=(70, 50)).astype(dtype) for _ in range(2))
    state = [np.abs(rng.normal(size=(70, 50))).astype(dtype) for _ in range(STATE_ARRAYS[name])]
    if name == "nadam" or name == "radam":
        state[0] = rng.normal(size=(70, 50)).astype(dtype)  # exp_avg may be negative
    fast, slow = _portable_and_numba(name, [p, g, *state], UPDATE_SCALARS[name][variant])
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("case", ["adadelta-options", "adagrad-options", "nadam-options", "radam-decoupled"])
def test_numpy_takes_the_compiled_path_and_a_strided_parameter_the_portable_one(monkeypatch, case):
    from xpnn.kernels import numba_elementwise

    calls = []
    name = case.split("-")[0]
    original = getattr(numba_elementwise, f"{name}_update")
    monkeypatch.setattr(numba_elementwise, f"{name}_update", lambda *a: calls.append(1) or original(*a))
    p0, grads = _problem(6, np.float32, shape=(6, 8))
    _ours(_NUMPY, case, p0, grads, np.float32, steps=3)
    assert len(calls) == 3
    base = p0.copy()
    param = nn.Parameter(base[:, ::2])
    opt = CASES[case][0]([param], **CASES[case][2])
    param.grad[...] = grads[0][:, ::2]
    opt.step()
    assert len(calls) == 3
    expected, _, _ = _ours(_NUMPY, case, np.ascontiguousarray(p0[:, ::2]), [grads[0][:, ::2]], np.float32)
    np.testing.assert_allclose(base[:, ::2], expected[0], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(base[:, 1::2], p0[:, 1::2])


@pytest.mark.parametrize("case", list(CASES))
def test_float16_parameters_are_updated_in_float32(backend, case):
    if not hasattr(backend.xp, "float16"):
        pytest.skip(f"{backend.name} has no float16")
    p0, grads = _problem(7, np.float32)
    p16 = p0.astype(np.float16)
    got, opt, param = _ours(backend, case, p16, [g.astype(np.float16) for g in grads], np.float16, steps=5)
    wide, _, _ = _ours(backend, case, p16.astype(np.float32), [g.astype(np.float16).astype(np.float32) for g in grads], np.float32, steps=1)
    assert param.data.dtype == xb.resolve_dtype("float16", backend.xp)
    np.testing.assert_array_equal(got[0], wide[0].astype(np.float16))
    assert all(np.isfinite(h).all() for h in got)
    assert all(xb.dtype_name(v.dtype) == "float32" for v in opt.state[param].values() if hasattr(v, "shape"))


@pytest.mark.parametrize("case", ["adadelta", "adagrad", "nadam", "radam"])
def test_training_steps_convert_nothing_to_host_on_array_api_strict(monkeypatch, case):
    strict = pytest.importorskip("array_api_strict")
    cls = CASES[case][0]
    model, opt, x, y = _setup("lenet", "array_api_strict", lambda params: cls(params))
    with counting_host_conversions(monkeypatch, type(strict.zeros(1))) as seen:
        loss = _steps(model, opt, x, y)
    assert seen == [], f"host conversions inside a training step with {case}: {seen}"
    assert np.isfinite(float(loss))

"""No host syncs inside a training step: forward, loss, backward and the optimizer update of the
MLP, the seed CNN and LeNet read nothing back to the host. Proven without a GPU on
array_api_strict, whose arrays count every conversion to a host value (``float``, ``int``,
``bool``, ``__index__``, ``__array__``); on CuPy the same steps run under
``cupyx.allow_synchronize(False)``, which raises at any synchronisation."""

import contextlib

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn import nn, optim
from xpnn.models import build_model

CONVERSIONS = ("__float__", "__int__", "__bool__", "__index__", "__complex__", "__array__")


@contextlib.contextmanager
def counting_host_conversions(monkeypatch, array_type):
    """Count (and name) every conversion of an ``array_type`` array to a host value."""
    seen = []
    for name in CONVERSIONS:
        original = getattr(array_type, name, None)
        if original is None:
            continue

        def counted(self, *args, _name=name, _original=original, **kwargs):
            seen.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(array_type, name, counted)
    yield seen
    monkeypatch.undo()


def _steps(model, optimizer, x, y, count=3):
    loss_fn = nn.CrossEntropyLoss()
    loss = None
    for _ in range(count):
        loss = loss_fn(model(x), y)
        optimizer.zero_grad()
        model.backward_params(loss_fn.backward())
        optimizer.step()
    return loss


def _setup(name, device, optimizer):
    xpnn.manual_seed(0)
    model = build_model(name, (1, 28, 28), 10, device=device)
    opt = optimizer(model.parameters())
    rng = np.random.default_rng(0)
    x = xb.asarray(rng.uniform(0, 1, size=(8, 1, 28, 28)).astype(np.float32), model.xp, device=model.device)
    y = xb.asarray(rng.integers(0, 10, size=8), model.xp, device=model.device)
    return model, opt, x, y


OPTIMIZERS = {
    "adam": lambda params: optim.Adam(params, lr=1e-3),
    "sgd-momentum": lambda params: optim.SGD(params, lr=1e-2, momentum=0.9, nesterov=True),
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("name", ["mlp", "cnn", "lenet"])
def test_training_steps_convert_nothing_to_host_on_array_api_strict(monkeypatch, name, optimizer):
    strict = pytest.importorskip("array_api_strict")
    model, opt, x, y = _setup(name, "array_api_strict", OPTIMIZERS[optimizer])
    with counting_host_conversions(monkeypatch, type(strict.zeros(1))) as seen:
        loss = _steps(model, opt, x, y)
    assert seen == [], f"host conversions inside a {name} training step: {seen}"
    assert np.isfinite(float(loss))


def test_the_counter_sees_a_conversion(monkeypatch):
    strict = pytest.importorskip("array_api_strict")
    with counting_host_conversions(monkeypatch, type(strict.zeros(1))) as seen:
        float(strict.sum(strict.ones(3)))
    assert seen == ["__float__"]


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("name", ["mlp", "cnn", "lenet"])
def test_training_steps_do_not_synchronize_on_cupy(name, optimizer):
    cupyx = pytest.importorskip("cupyx")
    try:
        xb.resolve("cuda")
    except xpnn.XpnnError as exc:
        pytest.skip(f"no GPU: {exc}")
    model, opt, x, y = _setup(name, "cuda", OPTIMIZERS[optimizer])
    _steps(model, opt, x, y, count=1)  # compile the kernels first: loading a module may synchronise
    with cupyx.allow_synchronize(False):
        loss = _steps(model, opt, x, y)
    assert np.isfinite(float(loss))

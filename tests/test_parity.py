"""Cross-backend parity: the same model, weights and batch give the same loss and gradients on
every backend as on NumPy (float32, rtol about 1e-5)."""

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn import nn, optim


def _model():
    return nn.Sequential(
        nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 16), nn.GELU(),
        nn.Linear(16, 8), nn.LeakyReLU(), nn.Linear(8, 8), nn.Sigmoid(), nn.Linear(8, 5),
    )


@pytest.mark.parametrize("loss_name", ["ce", "ce-smooth", "mse", "bce-logits"])
def test_loss_and_gradients_match_numpy(backend, rng, loss_name):
    x = rng.normal(size=(10, 12)).astype(np.float32)
    labels = rng.integers(0, 5, size=10)
    if loss_name == "ce":
        make_loss, target = nn.CrossEntropyLoss, labels
    elif loss_name == "ce-smooth":
        make_loss, target = (lambda: nn.CrossEntropyLoss(label_smoothing=0.1)), labels
    elif loss_name == "mse":
        make_loss, target = nn.MSELoss, rng.normal(size=(10, 5)).astype(np.float32)
    else:
        make_loss, target = nn.BCEWithLogitsLoss, rng.integers(0, 2, size=(10, 5)).astype(np.float32)
    results = {}
    for name, device in (("numpy", "cpu"), (backend.name, backend.device)):
        xpnn.manual_seed(42)
        model = _model().to(device)
        xp = model.xp
        loss_fn = make_loss()
        loss = loss_fn(model(xb.asarray(x, xp, None, model.device)), xb.asarray(target, xp, None, model.device))
        gx = model.backward(loss_fn.backward())
        results[name] = (float(loss), xb.to_numpy(gx), [xb.to_numpy(p.grad) for p in model.parameters()])
    ref, got = results["numpy"], results[backend.name]
    np.testing.assert_allclose(got[0], ref[0], rtol=1e-5)
    np.testing.assert_allclose(got[1], ref[1], rtol=1e-5, atol=1e-7)
    for a, b in zip(got[2], ref[2]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("make_opt", [
    lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
    lambda ps: optim.Adam(ps, lr=1e-2),
    lambda ps: optim.AdamW(ps, lr=1e-2, amsgrad=True),
    lambda ps: optim.RMSprop(ps, lr=1e-3, centered=True, momentum=0.5),
], ids=["sgd", "adam", "adamw", "rmsprop"])
def test_training_steps_match_numpy(backend, rng, make_opt):
    x = rng.normal(size=(16, 12)).astype(np.float32)
    y = rng.integers(0, 5, size=16)
    weights = {}
    for name, device in (("numpy", "cpu"), (backend.name, backend.device)):
        xpnn.manual_seed(7)
        model = _model().to(device)
        opt = make_opt(list(model.parameters()))
        loss_fn = nn.CrossEntropyLoss()
        xd, yd = xb.asarray(x, model.xp, None, model.device), xb.asarray(y, model.xp, None, model.device)
        for _ in range(5):
            loss_fn(model(xd), yd)
            opt.zero_grad()
            model.backward(loss_fn.backward())
            opt.step()
        weights[name] = [xb.to_numpy(p.data) for p in model.parameters()]
    for a, b in zip(weights[backend.name], weights["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)

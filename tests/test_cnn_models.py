"""The seed CNN and a LeNet-style CNN built from nn layers: forward/backward on every backend,
dtypes, finite non-zero gradients, parity with NumPy, and Adam steps that reduce the loss."""

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn import nn, optim


def seed_cnn(device="cpu"):
    xpnn.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 28 * 28, 128), nn.ReLU(), nn.Linear(128, 10),
    ).to(device)


def lenet(device="cpu"):
    xpnn.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 10),
    ).to(device)


MODELS = {"seed_cnn": seed_cnn, "lenet": lenet}


def batch(n=16, seed=0):
    """Digit-like images: a class-dependent bright bar on noise, so the classes are learnable."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.uniform(0, 0.3, size=(n, 1, 28, 28))
    for i, label in enumerate(labels):
        images[i, 0, 2 + 2 * label:5 + 2 * label, 4:24] = 1.0
    return images.astype(np.float32), labels


def _step(model, images, labels):
    xp = model.xp
    loss_fn = nn.CrossEntropyLoss()
    logits = model(xb.asarray(images, xp, xp.float32, model.device))
    loss = loss_fn(logits, xb.asarray(labels, xp, None, model.device))
    model.zero_grad()
    grad_in = model.backward(loss_fn.backward())
    return logits, loss, grad_in


@pytest.mark.parametrize("name", list(MODELS))
def test_forward_backward_shapes_dtypes_and_grads(backend, name):
    model = MODELS[name](backend.device)
    images, labels = batch()
    logits, loss, grad_in = _step(model, images, labels)
    assert tuple(logits.shape) == (16, 10) and logits.dtype == backend.xp.float32
    assert tuple(loss.shape) == () and loss.dtype == backend.xp.float32
    assert tuple(grad_in.shape) == (16, 1, 28, 28) and grad_in.dtype == backend.xp.float32
    for pname, param in model.named_parameters():
        grad = xb.to_numpy(param.grad)
        assert param.grad.dtype == backend.xp.float32, pname
        assert np.all(np.isfinite(grad)) and np.any(grad != 0), pname


@pytest.mark.parametrize("name", list(MODELS))
def test_parity_with_numpy(backend, name):
    images, labels = batch(8, seed=1)
    results = []
    for device in ("cpu", backend.device):
        model = MODELS[name](device)
        logits, _, grad_in = _step(model, images, labels)
        results.append([xb.to_numpy(logits), xb.to_numpy(grad_in)] + [xb.to_numpy(p.grad) for p in model.parameters()])
    for i, (ref, got) in enumerate(zip(*results)):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, err_msg=f"array {i}")


@pytest.mark.parametrize("name", list(MODELS))
def test_adam_steps_reduce_the_loss(backend, name):
    model = MODELS[name](backend.device)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    images, labels = batch()
    losses = []
    for _ in range(6):
        _, loss, _ = _step(model, images, labels)
        losses.append(float(xb.to_numpy(loss)))
        opt.step()
    assert all(np.isfinite(losses))
    assert losses[-1] < 0.7 * losses[0], losses

"""Ready models: output shapes on 28x28 and 8x8 images on every backend, backward shapes, the
LeNet sizing rule, and the factory's error for an unknown name."""

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ConfigError, XpnnError
from xpnn.models import LeNet, MLP, MODELS, SimpleCNN, build_model

needs_conv = pytest.mark.skipif(not all(hasattr(nn, n) for n in ("Conv2d", "MaxPool2d")), reason="nn.Conv2d/MaxPool2d not available yet")


def _images(backend, n, h, w, c=1, seed=0):
    return backend.asarray(np.random.default_rng(seed).standard_normal((n, c, h, w)), "float32")


@pytest.mark.parametrize("size", [28, 8])
def test_mlp_shapes_and_backward(backend, size):
    xpnn.manual_seed(0)
    model = MLP([size * size, 32, 10], xp=backend.device)
    assert model.xp is backend.xp and all(m.xp is backend.xp for m in model.modules())
    x = _images(backend, 3, size, size)
    out = model(x)
    assert tuple(out.shape) == (3, 10) and out.dtype == backend.xp.float32
    grad = model.backward(backend.xp.ones_like(out))
    assert tuple(grad.shape) == (3, 1, size, size)
    flat = backend.xp.reshape(x, (3, size * size))
    np.testing.assert_allclose(xb.to_numpy(model(flat)), xb.to_numpy(out), rtol=1e-6)


def test_mlp_layers_dropout_activation_and_dtype():
    model = MLP([64, 32, 16, 10], activation="tanh", dropout=0.25, dtype="float64")
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Flatten", "Linear", "Tanh", "Dropout", "Linear", "Tanh", "Dropout", "Linear"]
    assert all(p.dtype == np.float64 for p in model.parameters())
    assert model.num_parameters() == 64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10
    with pytest.raises(XpnnError, match="unknown activation 'swish'; expected one of: relu"):
        MLP([4, 2], activation="swish")
    with pytest.raises(ConfigError, match="at least two positive ints"):
        MLP([4])


def test_build_model_mlp_sizes_from_image_shape():
    model = build_model("mlp", (1, 28, 28), 10)
    assert [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)] == [(784, 256), (256, 10)]
    model = build_model("MLP", (8, 8), 3, hidden=(16, 8))
    assert [(m.in_features, m.out_features) for m in model if isinstance(m, nn.Linear)] == [(64, 16), (16, 8), (8, 3)]


def test_build_model_unknown_name_lists_known_ones():
    with pytest.raises(XpnnError, match=r"unknown model 'resnet'; expected one of: mlp, cnn, lenet, resnet8, resnet20, resnet32, resnet56"):
        build_model("resnet", (1, 28, 28), 10)
    assert set(MODELS) == {"mlp", "cnn", "lenet", "resnet8", "resnet20", "resnet32", "resnet56"}
    with pytest.raises(XpnnError, match="model 'lenet'.*unexpected keyword"):
        build_model("lenet", (1, 8, 8), 10, hidden=(3,))


@needs_conv
@pytest.mark.parametrize("size", [28, 8])
@pytest.mark.parametrize("cls", [SimpleCNN, LeNet])
def test_cnn_shapes_and_backward(backend, cls, size):
    xpnn.manual_seed(0)
    model = cls(1, (size, size), 10, xp=backend.device)
    assert all(m.xp is backend.xp for m in model.modules())
    x = _images(backend, 2, size, size)
    out = model(x)
    assert tuple(out.shape) == (2, 10) and out.dtype == backend.xp.float32
    grad = model.backward(backend.xp.ones_like(out))
    assert tuple(grad.shape) == (2, 1, size, size)


@needs_conv
def test_lenet_sizes_follow_the_image():
    linear = [m for m in LeNet(1, (28, 28), 10) if isinstance(m, nn.Linear)]
    assert (linear[0].in_features, linear[0].out_features, linear[1].out_features) == (16 * 5 * 5, 120, 10)
    linear = [m for m in LeNet(1, (8, 8), 10) if isinstance(m, nn.Linear)]
    assert linear[0].in_features == 16 * 1 * 1
    model = LeNet(3, (12, 20), 4)
    out = model(np.zeros((2, 3, 12, 20), dtype=np.float32))
    assert out.shape == (2, 4)
    cnn = [m for m in SimpleCNN(1, (8, 8), 10) if isinstance(m, nn.Linear)]
    assert (cnn[0].in_features, cnn[0].out_features) == (8 * 8 * 8, 128)
    with pytest.raises(ConfigError, match="LeNet needs images of at least 2x2 pixels and 1 channel, got 1x8"):
        LeNet(1, (1, 8), 10)


@needs_conv
def test_build_model_cnn_and_lenet_on_digits_shape():
    for name in ("cnn", "lenet"):
        model = build_model(name, (1, 8, 8), 10, dtype="float64")
        assert model(np.zeros((4, 1, 8, 8))).shape == (4, 10)

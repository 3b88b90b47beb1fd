"""The CIFAR ResNets of He et al. (2016) in xpnn.models (issue 17): parameter counts, shapes on
CIFAR and MNIST images, the option-A shortcut's gradients, a float64 gradient check of a narrow
ResNet, outputs and gradients equal to a hand-written PyTorch ResNet-20 (bench/torch_models.py)
with the same weights, config and checkpoint round trips, summary, every backend, and learning."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb, models, nn, optim
from xpnn.errors import ConfigError, ShapeError
from xpnn.nn import architecture

from gradcheck import check_layer

TORCH_MODELS = Path(__file__).resolve().parents[1] / "bench" / "torch_models.py"


def n_params(model):
    return sum(int(np.prod(p.data.shape)) for p in model.parameters())


# ---- sizes -----------------------------------------------------------------------------------


def test_parameter_counts():
    assert n_params(models.resnet20()) == 269_722  # the paper's "0.27M" with option-A shortcuts
    assert n_params(models.resnet32()) == 464_154
    assert n_params(models.resnet56()) == 853_018
    assert n_params(models.resnet8()) == 75_002  # grey images
    assert n_params(models.build_model("resnet20", (3, 32, 32), 100)) == 269_722 + 64 * 90 + 90  # CIFAR-100's head
    assert n_params(models.build_model("resnet8", (3, 32, 32), 10)) == 75_290


@pytest.mark.parametrize("name", ["resnet8", "resnet20", "resnet32", "resnet56"])
@pytest.mark.parametrize("shape, classes", [((3, 32, 32), 10), ((1, 28, 28), 10), ((28, 28), 7), ((3, 32, 32), 100)])
def test_output_shapes(name, shape, classes, rng):
    model = models.build_model(name, shape, classes)
    assert isinstance(model, models.ResNet) and model.blocks == {"resnet8": 1, "resnet20": 3, "resnet32": 5, "resnet56": 9}[name]
    c, h, w = (1, *shape) if len(shape) == 2 else shape
    y = model(rng.normal(size=(2, c, h, w)).astype(np.float32))
    assert tuple(y.shape) == (2, classes) and y.dtype == np.float32


def test_structure_and_names():
    model = models.resnet20()
    names = [name for name, _ in model.named_parameters()]
    assert names[:2] == ["conv1.weight", "bn1.weight"] and names[-2:] == ["fc.weight", "fc.bias"]
    assert "layer3.2.residual.body.conv2.weight" in names and not any(".bias" in n and "conv" in n for n in names)
    depth = sum(1 for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    assert depth == 20
    shortcuts = [m for m in model.modules() if isinstance(m, models.ZeroPadShortcut)]
    assert [(s.in_channels, s.out_channels, s.stride) for s in shortcuts] == [(16, 32, 2), (32, 64, 2)]
    assert [m.shortcut for m in model.modules() if isinstance(m, nn.Residual)].count(None) == 7
    assert models.MODELS.keys() >= {"resnet8", "resnet20", "resnet32", "resnet56"}


def test_bad_arguments_are_config_errors():
    with pytest.raises(ConfigError, match="ResNet needs blocks >= 1 per stage, got 0"):
        models.ResNet(0)
    with pytest.raises(ConfigError, match="ResNet needs widths, a non-empty list of positive ints"):
        models.ResNet(1, widths=[])
    with pytest.raises(ConfigError, match="ResNet needs num_classes >= 1, got 0"):
        models.ResNet(1, num_classes=0)
    with pytest.raises(ConfigError, match=r"ResNet-20 needs an image shape \(H, W\) or \(C, H, W\)"):
        models.build_model("resnet20", (3,), 10)
    with pytest.raises(ConfigError, match="ZeroPadShortcut: expected positive ints with out_channels >= in_channels"):
        models.ZeroPadShortcut(4, 2)
    with pytest.raises(ShapeError, match=r"ZeroPadShortcut\(2, 4, stride=2\): expected an \(N, 2, H, W\) input, got shape \(1, 3, 4, 4\)"):
        models.ZeroPadShortcut(2, 4)(np.zeros((1, 3, 4, 4), np.float32))


# ---- the shortcut and gradients ------------------------------------------------------------


def test_zero_pad_shortcut_forward(backend, rng):
    x = rng.normal(size=(2, 3, 5, 4))
    y = xb.to_numpy(models.ZeroPadShortcut(3, 5, 2).to(backend.device)(backend.asarray(x, np.float32)))
    assert y.shape == (2, 5, 3, 2)
    np.testing.assert_array_equal(y[:, :3], x[:, :, ::2, ::2].astype(np.float32))
    np.testing.assert_array_equal(y[:, 3:], 0)


@pytest.mark.parametrize("args, shape", [((2, 4, 2), (2, 2, 5, 4)), ((3, 3, 1), (2, 3, 3, 3)), ((1, 3, 3), (1, 1, 7, 6)), ((2, 2, 2), (2, 2, 4, 4))])
def test_zero_pad_shortcut_gradcheck(backend, rng, args, shape):
    check_layer(models.ZeroPadShortcut(*args), rng.normal(size=shape), backend, rng)


def test_narrow_resnet_gradcheck(rng):
    """A whole ResNet in float64 on NumPy: 1 block per stage, 2/3/4 channels, both shortcut kinds."""
    xpnn.manual_seed(0)
    model = models.ResNet(1, in_channels=2, num_classes=3, widths=[2, 3, 4])
    check_layer(model, rng.normal(size=(3, 2, 5, 5)), xb_numpy(), rng)


def xb_numpy():
    from conftest import Backend

    return Backend("numpy", "cpu")


# ---- against PyTorch ------------------------------------------------------------------------


def torch_models():
    spec = importlib.util.spec_from_file_location("bench_torch_models", TORCH_MODELS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("dtype, rtol, atol", [("float64", 1e-9, 1e-11), ("float32", 2e-3, 2e-5)])
def test_resnet20_equals_a_torch_resnet20(rng, dtype, rtol, atol):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    theirs = torch_models().build("resnet20").to(getattr(torch, dtype))
    mine = models.resnet20(dtype=dtype)
    assert n_params(mine) == sum(p.numel() for p in theirs.parameters())
    their_params = dict(theirs.named_parameters())
    mine_params = dict(mine.named_parameters())
    assert {k.replace(".residual.", ".") for k in mine_params} == set(their_params)
    for name, param in mine_params.items():
        value = their_params[name.replace(".residual.", ".")].detach().numpy()
        param.data = np.ascontiguousarray(value)  # PyTorch's layouts, Linear's (out, in) too

    x = rng.normal(size=(6, 3, 32, 32)).astype(dtype)
    labels = rng.integers(0, 10, 6)
    loss_fn = nn.CrossEntropyLoss()
    loss = loss_fn(mine(x), labels)
    mine.zero_grad()
    gx = mine.backward(loss_fn.backward())
    xt = torch.tensor(x, requires_grad=True)
    their_loss = torch.nn.functional.cross_entropy(theirs(xt), torch.tensor(labels))
    their_loss.backward()
    np.testing.assert_allclose(float(loss), their_loss.item(), rtol=rtol)
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=rtol, atol=atol)
    for name, param in mine_params.items():
        expected = their_params[name.replace(".residual.", ".")].grad.numpy()
        np.testing.assert_allclose(param.grad, expected, rtol=rtol, atol=atol, err_msg=name)
    their_buffers = dict(theirs.named_buffers())
    for name, buf in mine.named_buffers():
        np.testing.assert_allclose(buf, their_buffers[name.replace(".residual.", ".")].numpy(), rtol=rtol, atol=atol, err_msg=name)
    mine.eval(), theirs.eval()
    with torch.no_grad():
        np.testing.assert_allclose(mine(x), theirs(torch.tensor(x)).numpy(), rtol=rtol, atol=atol)


# ---- configs, checkpoints, summary ----------------------------------------------------------


def test_config_round_trip_and_budget(rng):
    model = models.ResNet(2, in_channels=1, num_classes=4, widths=[3, 5, 7, 9])
    config = json.loads(json.dumps(model.get_config()))
    assert config == {"class": "ResNet", "args": {"blocks": 2, "in_channels": 1, "num_classes": 4, "widths": [3, 5, 7, 9], "dtype": None}}
    assert architecture.check_config(config) == sum(v.size for v in model.state_dict().values())
    rebuilt = nn.from_config(config)
    assert isinstance(rebuilt, models.ResNet) and rebuilt.get_config() == config
    rebuilt.load_state_dict(model.state_dict())
    x = rng.normal(size=(2, 1, 9, 9)).astype(np.float32)
    model.eval(), rebuilt.eval()
    np.testing.assert_array_equal(rebuilt(x), model(x))
    resnet20 = models.resnet20().get_config()
    assert architecture.check_config(resnet20) == sum(v.size for v in models.resnet20().state_dict().values())
    shortcut = models.ZeroPadShortcut(2, 6, 3).get_config()
    assert nn.from_config(shortcut).get_config() == shortcut == {"class": "ZeroPadShortcut", "args": {"in_channels": 2, "out_channels": 6, "stride": 3}}


@pytest.mark.parametrize("config, message", [
    ({"class": "ResNet", "args": {"widths": [16, "x"]}}, r"model \(ResNet\)\.widths: expected a list of ints"),
    ({"class": "ResNet", "args": {"blocks": 1.5}}, r"model \(ResNet\)\.blocks: expected an int"),
    ({"class": "ZeroPadShortcut", "args": {"in_channels": 2, "out_channels": [4]}}, r"ZeroPadShortcut\)\.out_channels: expected an int"),
])
def test_untrusted_configs_are_refused(config, message):
    with pytest.raises(ConfigError, match=message):
        nn.from_config(config)


def test_a_huge_config_is_refused_before_building():
    with pytest.raises(ConfigError):
        nn.from_config({"class": "ResNet", "args": {"blocks": 100_000, "widths": [512, 512, 512]}})


def test_save_and_load(tmp_path, rng):
    xpnn.manual_seed(3)
    model = models.build_model("resnet8", (1, 12, 12), 5)
    model.train()
    model(rng.normal(size=(4, 1, 12, 12)).astype(np.float32))  # running statistics move off their start
    xpnn.save(model, tmp_path / "resnet.npz")
    loaded = xpnn.load(tmp_path / "resnet.npz")
    assert isinstance(loaded, models.ResNet) and loaded.get_config() == model.get_config()
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        np.testing.assert_array_equal(xb.to_numpy(b), xb.to_numpy(a), err_msg=name)
    x = rng.normal(size=(3, 1, 12, 12)).astype(np.float32)
    model.eval(), loaded.eval()
    np.testing.assert_array_equal(loaded(x), model(x))


def test_summary():
    table = models.resnet20().summary((3, 32, 32))
    assert table.total_params == 269_722
    assert "Total params: 269,722" in table
    rows = {(r.name, r.type): r.output_shape for r in table.rows}
    assert rows[("shortcut", "ZeroPadShortcut")] in {(-1, 32, 16, 16), (-1, 64, 8, 8)}
    assert rows[("layer3", "Sequential")] == (-1, 64, 8, 8) and rows[("fc", "Linear")] == (-1, 10)


# ---- every backend, and learning --------------------------------------------------------------


def test_grey_resnet_step_on_every_backend(backend, rng):
    images = rng.normal(size=(4, 1, 28, 28))
    labels = rng.integers(0, 10, 4)
    results = []
    for device in ("cpu", backend.device):
        xpnn.manual_seed(1)
        model = models.build_model("resnet8", (1, 28, 28), 10, device=device)
        loss_fn = nn.CrossEntropyLoss()
        x = xb.asarray(images, model.xp, model.xp.float32, model.device)
        logits = model(x)
        loss_fn(logits, xb.asarray(labels, model.xp, None, model.device))
        model.zero_grad()
        grad_in = model.backward(loss_fn.backward())
        assert tuple(logits.shape) == (4, 10) and tuple(grad_in.shape) == (4, 1, 28, 28)
        assert all(p.grad.dtype == model.xp.float32 for p in model.parameters())
        results.append([xb.to_numpy(logits), xb.to_numpy(grad_in)] + [xb.to_numpy(p.grad) for p in model.parameters()])
    for i, (ref, got) in enumerate(zip(*results)):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=f"array {i}")


def test_sgd_steps_on_digits_reduce_the_loss():
    from xpnn.data import load_dataset

    x, y = load_dataset("digits").arrays()
    xpnn.manual_seed(0)
    model = models.build_model("resnet8", x.shape[1:], 10)
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(12):
        i = (step % 4) * 64
        loss = loss_fn(model(x[i:i + 64]), y[i:i + 64])
        losses.append(float(loss))
        opt.zero_grad()
        model.backward_params(loss_fn.backward())
        opt.step()
    assert np.isfinite(losses).all() and np.mean(losses[-4:]) < 0.6 * np.mean(losses[:4]), losses


def test_inference_under_no_grad_keeps_no_cache(rng):
    model = models.ResNet(1, in_channels=1, num_classes=3, widths=[2, 4])
    x = rng.normal(size=(2, 1, 6, 6)).astype(np.float32)
    model.eval()
    expected = model(x)
    with nn.no_grad():
        found = model(x)
    np.testing.assert_array_equal(found, expected)
    shortcut = next(m for m in model.modules() if isinstance(m, models.ZeroPadShortcut))
    assert shortcut._x_shape is None
    with pytest.raises(xpnn.errors.CallOrderError, match="no_grad"):
        model.backward(np.ones((2, 3), np.float32))

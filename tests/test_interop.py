"""Weights in and out (issue 19): PyTorch models written and saved by PyTorch (safetensors and
torch.save) load into the equivalent xpnn model with one call and give the same outputs;
``save_weights`` / ``load_weights`` round trips, into PyTorch too; clear errors naming keys; and
DLPack arrays in without copies."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn import models, nn
from xpnn.errors import CheckpointError, ConfigError, DeviceError

torch = pytest.importorskip("torch")
tnn = torch.nn
TORCH_MODELS = Path(__file__).resolve().parents[1] / "bench" / "torch_models.py"
HAS_SAFETENSORS = importlib.util.find_spec("safetensors") is not None
needs_safetensors = pytest.mark.skipif(not HAS_SAFETENSORS, reason="safetensors is not installed (pip install 'xpnn[interop]')")


def torch_models():
    spec = importlib.util.spec_from_file_location("bench_torch_models", TORCH_MODELS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _settle_batchnorm(theirs, shape, steps=3):
    """Give BatchNorm running statistics that are not the initial ones (train-mode forwards)."""
    theirs.train()
    with torch.no_grad():
        for _ in range(steps):
            theirs(torch.randn(*shape))
    theirs.eval()


def _pairs():
    """(name, torch model, xpnn model, input shape, rename, integer input vocabulary or None)."""
    torch.manual_seed(0)
    twins = torch_models()
    embed = tnn.Sequential(tnn.Embedding(11, 6), tnn.LayerNorm(6), tnn.Flatten(), tnn.Linear(5 * 6, 4))
    conv1d = tnn.Sequential(tnn.Conv1d(3, 4, 3, padding=1), tnn.GroupNorm(2, 4), tnn.PReLU(4), tnn.Conv1d(4, 2, 3, stride=2),
                            tnn.Flatten(), tnn.Linear(2 * 3, 3))
    conv2d = tnn.Sequential(tnn.Conv2d(2, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(), tnn.ConvTranspose2d(4, 3, 2, stride=2),
                            tnn.BatchNorm2d(3), tnn.Flatten(), tnn.Linear(3 * 8 * 8, 2))
    return [
        ("mlp", tnn.Sequential(tnn.Flatten(), tnn.Linear(20, 16), tnn.ReLU(), tnn.Linear(16, 5)), models.MLP([20, 16, 5]), (3, 20), None, None),
        ("lenet", twins.build("lenet"), models.LeNet(), (4, 1, 28, 28), None, None),
        ("embedding-layernorm", embed,
         nn.Sequential(nn.Embedding(11, 6), nn.LayerNorm(6), nn.Flatten(), nn.Linear(5 * 6, 4)), (3, 5), None, 11),
        ("conv1d-groupnorm-prelu", conv1d,
         nn.Sequential(nn.Conv1d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.PReLU(4), nn.Conv1d(4, 2, 3, stride=2), nn.Flatten(), nn.Linear(2 * 3, 3)),
         (3, 3, 8), None, None),
        ("conv2d-batchnorm-convtranspose", conv2d,
         nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.ConvTranspose2d(4, 3, 2, stride=2), nn.BatchNorm2d(3),
                       nn.Flatten(), nn.Linear(3 * 8 * 8, 2)),
         (3, 2, 4, 4), None, None),
        ("resnet20", twins.build("resnet20"), models.resnet20(), (2, 3, 32, 32),
         lambda name: re.sub(r"^(layer\d+\.\d+)\.", r"\1.residual.", name), None),
    ]


PAIRS = [p[0] for p in _pairs()]


def _pair(name):
    return next(p for p in _pairs() if p[0] == name)


def _input(shape, vocabulary, seed=1):
    g = torch.Generator().manual_seed(seed)
    if vocabulary:
        return torch.randint(0, vocabulary, shape, generator=g)
    return torch.randn(*shape, generator=g)


def _same_outputs(theirs, mine, x):
    theirs.eval()
    mine.eval()
    with torch.no_grad():
        expected = theirs(x).numpy()
    with xpnn.no_grad():
        got = xb.to_numpy(mine(xb.asarray(x.numpy(), mine.xp, device=mine.device)))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["safetensors", "torch.save", "state_dict"])
@pytest.mark.parametrize("name", PAIRS)
def test_pytorch_weights_saved_by_pytorch_load_and_give_the_same_outputs(tmp_path, name, fmt):
    _, theirs, mine, shape, rename, vocabulary = _pair(name)
    if any(isinstance(m, tnn.modules.batchnorm._BatchNorm) for m in theirs.modules()):
        _settle_batchnorm(theirs, shape)
    if fmt == "safetensors":
        if not HAS_SAFETENSORS:
            pytest.skip("safetensors is not installed")
        from safetensors.torch import save_file

        source = tmp_path / "model.safetensors"
        save_file(theirs.state_dict(), source)
    elif fmt == "torch.save":
        source = tmp_path / "model.pt"
        torch.save(theirs.state_dict(), source)
    else:
        source = theirs.state_dict()
    assert xpnn.load_torch_state_dict(mine, source, rename=rename) is mine
    _same_outputs(theirs, mine, _input(shape, vocabulary))


def test_loading_into_a_model_on_every_backend(backend):
    _, theirs, mine, shape, _, _ = _pair("mlp")
    mine.to(backend.device)
    xpnn.load_torch_state_dict(mine, theirs.state_dict())
    assert all(xb.namespace_of(p.data) is backend.xp for p in mine.parameters())
    _same_outputs(theirs, mine, _input(shape, None))


def test_numpy_arrays_and_float64_tensors_load_cast_to_the_model_dtype():
    _, theirs, mine, shape, _, _ = _pair("mlp")
    state = {k: v.double().numpy() for k, v in theirs.state_dict().items()}
    xpnn.load_torch_state_dict(mine, state)
    assert all(p.data.dtype == np.float32 for p in mine.parameters())
    _same_outputs(theirs, mine, _input(shape, None))


def test_mismatches_are_errors_naming_the_keys_and_change_nothing():
    _, theirs, mine, _, _, _ = _pair("mlp")
    before = mine.state_dict()
    state = theirs.state_dict()
    extra = dict(state, **{"5.weight": torch.zeros(2, 2)})
    with pytest.raises(CheckpointError, match=r"unexpected keys \(in the state_dict, not in the model\): 5.weight"):
        xpnn.load_torch_state_dict(mine, extra)
    short = {k: v for k, v in state.items() if k != "3.bias"}
    with pytest.raises(CheckpointError, match=r"missing keys \(in the model, not in the state_dict\): 3.bias"):
        xpnn.load_torch_state_dict(mine, short)
    wrong = dict(state, **{"1.weight": state["1.weight"].T.contiguous()})
    with pytest.raises(CheckpointError, match=r"1.weight has shape \(20, 16\) in the state_dict but \(16, 20\) in the model"):
        xpnn.load_torch_state_dict(mine, wrong)
    for (key, a), b in zip(before.items(), mine.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=key)
    xpnn.load_torch_state_dict(mine, short, strict=False)  # not strict: what is there loads
    np.testing.assert_array_equal(mine.state_dict()["1.weight"], state["1.weight"].numpy())
    with pytest.raises(CheckpointError, match=r"3.weight is a str, expected a tensor or an array"):
        xpnn.load_torch_state_dict(mine, dict(state, **{"3.weight": "x"}))


def test_a_torch_save_file_holding_code_is_refused(tmp_path):
    path = tmp_path / "whole_model.pt"
    torch.save(tnn.Sequential(tnn.Linear(2, 2)), path)  # a pickled Module, not a state_dict
    with pytest.raises(CheckpointError, match=r"not a torch.save file of tensors readable with weights_only=True"):
        xpnn.load_torch_state_dict(nn.Sequential(nn.Linear(2, 2)), path)
    with pytest.raises(CheckpointError, match="no such file"):
        xpnn.load_torch_state_dict(nn.Sequential(nn.Linear(2, 2)), tmp_path / "absent.pt")
    with pytest.raises(ConfigError, match="expected a state_dict"):
        xpnn.load_torch_state_dict(nn.Sequential(nn.Linear(2, 2)), 5)


@needs_safetensors
def test_save_weights_round_trips_and_loads_into_pytorch(tmp_path):
    _, theirs, mine, shape, rename, _ = _pair("conv2d-batchnorm-convtranspose")
    mine.train()
    mine(np.random.default_rng(0).normal(size=shape).astype(np.float32))  # running statistics of its own
    path = mine.save_weights(tmp_path / "w.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.safetensors"]  # atomic: no temporary left
    again = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.ConvTranspose2d(4, 3, 2, stride=2),
                          nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    assert again.load_weights(path) is again
    for (key, a), b in zip(mine.state_dict().items(), again.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=key)
    from safetensors.torch import load_file

    theirs.load_state_dict(load_file(path))  # PyTorch reads xpnn's file as its own
    _same_outputs(theirs, mine, _input(shape, None))


@needs_safetensors
def test_load_weights_refuses_a_file_that_is_not_safetensors(tmp_path):
    path = tmp_path / "bad.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match=r"not a readable safetensors file"):
        nn.Linear(2, 2).load_weights(path)


def test_without_safetensors_the_error_says_what_to_install(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ConfigError, match=r"needs the safetensors package; pip install 'xpnn\[interop\]'"):
        nn.Linear(2, 2).save_weights(tmp_path / "w.safetensors")
    assert not list(tmp_path.iterdir())


# ---- DLPack ------------------------------------------------------------------------------------


def test_from_dlpack_shares_memory_with_numpy_and_torch_cpu():
    t = torch.arange(12.0).reshape(3, 4)
    a = xb.from_dlpack(t)
    assert isinstance(a, np.ndarray) and np.shares_memory(a, t.numpy())
    t[0, 0] = 42.0
    assert a[0, 0] == 42.0  # the same buffer
    n = np.arange(6.0)
    assert np.shares_memory(xb.from_dlpack(n, "cpu"), n)
    back = torch.from_dlpack(a)  # and out again
    assert back.data_ptr() == t.data_ptr()
    g = torch.ones(3, requires_grad=True)
    assert np.shares_memory(xb.from_dlpack(g), g.detach().numpy())  # detached first, no copy


def test_from_dlpack_to_array_api_strict_and_the_device_error():
    strict = pytest.importorskip("array_api_strict")
    t = torch.arange(4.0)
    a = xb.from_dlpack(t, "array_api_strict")
    assert type(a).__module__.startswith("array_api_strict")
    np.testing.assert_array_equal(xb.to_numpy(a), t.numpy())

    class OnAGpu:
        def __dlpack__(self, **kwargs):
            raise BufferError("no")

        def __dlpack_device__(self):
            return (10, 0)  # ROCm: no xpnn backend

    with pytest.raises(DeviceError, match="DLPack device type 10"):
        xb.from_dlpack(OnAGpu())
    del strict


def test_asarray_and_module_to_accept_torch_tensors_without_copies():
    t = torch.randn(5, 3)
    a = xb.asarray(t, xb.resolve("cpu"))
    assert np.shares_memory(a, t.numpy())
    assert xb.asarray(t, xb.resolve("cpu"), dtype=np.float64).dtype == np.float64  # a cast copies
    layer = nn.Linear(3, 2).to(t)  # the backend of the tensor's device: NumPy for a CPU tensor
    assert xb.is_numpy(layer.xp) and layer.device is None
    np.testing.assert_allclose(layer(xb.asarray(t, layer.xp)), t.numpy() @ layer.weight.data.T + layer.bias.data, rtol=1e-6)
    state = {k: torch.from_dlpack(v) for k, v in nn.Linear(3, 2).state_dict().items()}
    layer.load_state_dict(state)  # state_dicts of torch tensors load too
    np.testing.assert_array_equal(layer.weight.data, state["weight"].numpy())

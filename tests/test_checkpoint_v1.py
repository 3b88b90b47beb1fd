"""Format version 1 checkpoints (Linear weights stored (in, out), before issue 19) still load:
restored into a model, rebuilt from their architecture, or read alone, their Linear weights and
the optimizer state of those weights come back in today's (out, in) layout."""

import json

import numpy as np
import pytest

import xpnn
from xpnn import models, nn, optim
from xpnn.errors import CheckpointError
from xpnn.train import load_checkpoint, save_checkpoint


def _write_version_1(path, model, optimizer=None, config=None, architecture=True):
    """Write a checkpoint as xpnn's version-1 code did: save one today, then transpose the Linear
    weights and their optimizer state back to (in, out) and mark the metadata version 1."""
    save_checkpoint(path, model, optimizer, config=config)
    with np.load(path, allow_pickle=False) as f:
        arrays = {name: f[name] for name in f.files}
    meta = json.loads(str(arrays.pop("__meta__")))
    meta["version"] = 1
    if not architecture:
        meta["model"].pop("architecture", None)
    linear = {name for name, m in model.named_modules() if isinstance(m, nn.Linear)}
    weights = [f"{name}.weight" if name else "weight" for name in linear]
    for name in weights:
        arrays[f"model/{name}"] = np.ascontiguousarray(arrays[f"model/{name}"].T)
    if optimizer is not None:
        ids = {id(dict(model.named_parameters())[name]) for name in weights}
        params = list(model.parameters())
        for index, values in meta["optimizer"]["state"]["state"].items():
            if id(params[int(index)]) in ids:
                for value in values.values():
                    if isinstance(value, dict) and arrays[value["__array__"]].ndim == 2:
                        arrays[value["__array__"]] = np.ascontiguousarray(arrays[value["__array__"]].T)
    arrays["__meta__"] = np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _trained(model, rng, steps=2):
    """``model`` after a few Adam steps on random data, and its optimizer."""
    opt = optim.Adam(model.parameters(), lr=1e-2)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(steps):
        x = rng.normal(size=(4, *model_input(model))).astype(np.float32)
        loss_fn(model(x), rng.integers(0, 3, 4))
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    return opt


def model_input(model):
    return (1, 8, 8) if isinstance(model, models.LeNet) else (6,)


def _square_mlp():
    return models.MLP([6, 6, 6, 3])  # square Linear layers: the shapes alone cannot tell the layout


def test_a_version_1_checkpoint_restores_model_and_optimizer_in_the_new_layout(tmp_path, rng):
    xpnn.manual_seed(0)
    model = _square_mlp()
    opt = _trained(model, rng)
    path = tmp_path / "v1.npz"
    _write_version_1(path, model, opt)
    checkpoint = load_checkpoint(path)
    assert checkpoint.version == 1 and checkpoint.meta["model"]["state"]

    xpnn.manual_seed(1)
    fresh = _square_mlp()
    fresh_opt = optim.Adam(fresh.parameters(), lr=1e-2)
    checkpoint.restore(fresh, fresh_opt)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=name)
    saved, restored = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    for index in saved:
        for key in ("exp_avg", "exp_avg_sq"):
            np.testing.assert_array_equal(saved[index][key], restored[index][key], err_msg=f"{index} {key}")
    # both continue identically
    x = rng.normal(size=(4, 6)).astype(np.float32)
    np.testing.assert_array_equal(model(x), fresh(x))


def test_a_version_1_checkpoint_rebuilds_from_its_architecture_and_reads_alone(tmp_path, rng):
    xpnn.manual_seed(0)
    model = _square_mlp()
    path = tmp_path / "v1.npz"
    _write_version_1(path, model)
    x = rng.normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_array_equal(xpnn.load(path)(x), model(x))
    state = load_checkpoint(path).model_state  # architecture says which entries are Linear weights
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(state[name], value, err_msg=name)


@pytest.mark.parametrize("name", ["mlp", "lenet", "resnet8"])
def test_a_version_1_cli_checkpoint_without_architecture(tmp_path, rng, name):
    """An older CLI checkpoint names its model in the run config: its 2-D arrays are Linear weights."""
    xpnn.manual_seed(0)
    model = models.build_model(name, (1, 8, 8), 3)
    path = tmp_path / "v1.npz"
    _write_version_1(path, model, config={"model": name}, architecture=False)
    checkpoint = load_checkpoint(path)
    assert checkpoint.architecture is None
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(checkpoint.model_state[key], value, err_msg=key)
    fresh = models.build_model(name, (1, 8, 8), 3)
    checkpoint.restore(fresh)
    x = rng.normal(size=(2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(fresh.eval()(x), model.eval()(x))


def test_a_version_1_checkpoint_needs_the_model_for_what_it_cannot_tell(tmp_path, rng):
    xpnn.manual_seed(0)
    model = _square_mlp()
    opt = _trained(model, rng)
    path = tmp_path / "v1.npz"
    _write_version_1(path, model, opt, architecture=False)
    checkpoint = load_checkpoint(path)
    with pytest.raises(CheckpointError, match=r"format version 1, which stored Linear weights \(in, out\).*restore it into a model"):
        checkpoint.model_state
    with pytest.raises(CheckpointError, match=r"restore the model with the optimizer \(restore\(model, optimizer\)\)"):
        checkpoint.restore(optimizer=optim.Adam(_square_mlp().parameters()))
    fresh = _square_mlp()
    checkpoint.restore(fresh)  # the live model tells
    for (key, a), b in zip(model.state_dict().items(), fresh.state_dict().values()):
        np.testing.assert_array_equal(a, b, err_msg=key)


def test_new_checkpoints_are_version_2_with_torch_layout(tmp_path):
    model = models.MLP([5, 4, 3])
    save_checkpoint(tmp_path / "m.npz", model)
    checkpoint = load_checkpoint(tmp_path / "m.npz")
    assert checkpoint.version == 2
    assert checkpoint.model_state["1.weight"].shape == (4, 5)

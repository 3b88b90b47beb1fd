"""Checkpoints: round trip, pickle-free format, atomic writes, bit-for-bit resume, Ctrl-C safety,
and clear errors for a checkpoint that does not fit or cannot be read."""

import json
import os
import zipfile

import numpy as np
import pytest

import xpnn
from xpnn import optim
from xpnn.data import DataLoader, load_dataset
from xpnn.errors import CheckpointError
from xpnn.models import MLP
from xpnn.train import Checkpoint, History, ModelCheckpoint, Trainer, load_checkpoint, restore, save_checkpoint
from xpnn.train import checkpoint as checkpoint_module


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits").arrays()


def _run(digits, seed=0, loader_seed=1):
    """A small run: MLP with dropout, Adam, StepLR, shuffling loader."""
    x, y = digits
    xpnn.manual_seed(seed)
    model = MLP([64, 32, 10], dropout=0.2)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    loader = DataLoader(x, y, batch_size=64, shuffle=True, seed=loader_seed)
    return Trainer(model, opt, scheduler=sched, verbose=False), loader


def _params(model):
    return {k: v.copy() for k, v in model.state_dict().items()}


def _files(directory):
    return sorted(p.name for p in directory.iterdir())


def test_round_trip_and_pickle_free_layout(digits, tmp_path):
    trainer, loader = _run(digits)
    trainer.fit(loader, epochs=1, progress=False)
    path = tmp_path / "model.npz"
    config = {"model": "mlp", "dataset": "digits", "image_shape": [1, 8, 8], "classes": list("0123456789")}
    save_checkpoint(path, trainer.model, trainer.optimizer, trainer.scheduler, epoch=1, config=config, history=trainer.history, loader=loader)

    with np.load(path, allow_pickle=False) as data:
        assert "model/1.weight" in data.files and "optimizer/state/0/exp_avg" in data.files
        meta = data["__meta__"]
        assert meta.shape == () and meta.dtype.kind == "U"
        meta = json.loads(str(meta))
    assert meta["format"] == "xpnn-checkpoint" and meta["epoch"] == 1 and meta["config"] == config
    assert meta["optimizer"]["state"]["param_groups"][0]["lr"] == 1.5e-3  # after one StepLR step
    assert meta["optimizer"]["state"]["state"]["0"]["exp_avg"] == {"__array__": "optimizer/state/0/exp_avg"}

    ckpt = load_checkpoint(path)
    assert isinstance(ckpt, Checkpoint) and ckpt.epoch == 1 and ckpt.config == config
    assert ckpt.history == trainer.history.to_dict() and isinstance(History(ckpt.history), History)
    for name, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(ckpt.model_state[name], value)
        assert ckpt.model_state[name].dtype == np.float32
    saved_opt = trainer.optimizer.state_dict()
    assert ckpt.optimizer_state["state"]["0"]["step"] == saved_opt["state"][0]["step"] == 23
    np.testing.assert_array_equal(ckpt.optimizer_state["state"]["0"]["exp_avg_sq"], saved_opt["state"][0]["exp_avg_sq"])
    assert ckpt.scheduler_state == trainer.scheduler.state_dict()
    assert ckpt.loader_state == loader.state_dict()
    assert ckpt.rng_state == xpnn.random.get_rng_state()
    assert ckpt.optimizer_class == "Adam" and ckpt.scheduler_class == "StepLR" and ckpt.model_class == "MLP"

    other, other_loader = _run(digits, seed=5, loader_seed=9)
    restore(path, other.model, other.optimizer, other.scheduler, other_loader)
    for name, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(other.model.state_dict()[name], value)
    assert other.optimizer.param_groups[0]["lr"] == trainer.optimizer.param_groups[0]["lr"]
    assert other.optimizer.param_groups[0]["betas"] == (0.9, 0.999)
    assert other.scheduler.last_epoch == trainer.scheduler.last_epoch
    assert other_loader.state_dict() == loader.state_dict()


def test_save_is_atomic_and_leaves_no_temporary_files(digits, tmp_path):
    trainer, _ = _run(digits)
    path = tmp_path / "model.npz"
    save_checkpoint(path, trainer.model, epoch=1)
    save_checkpoint(path, trainer.model, epoch=2)
    assert _files(tmp_path) == ["model.npz"]
    assert load_checkpoint(path).epoch == 2


@pytest.mark.parametrize("exc", [KeyboardInterrupt, OSError])
def test_interrupted_write_keeps_the_previous_checkpoint(digits, tmp_path, monkeypatch, exc):
    trainer, _ = _run(digits)
    path = tmp_path / "model.npz"
    save_checkpoint(path, trainer.model, epoch=1)
    before = path.read_bytes()

    def savez_then_fail(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise exc("interrupted while writing")

    monkeypatch.setattr(checkpoint_module.np, "savez", savez_then_fail)
    with pytest.raises(exc):
        save_checkpoint(path, trainer.model, epoch=2)
    assert path.read_bytes() == before and _files(tmp_path) == ["model.npz"]
    assert load_checkpoint(path).epoch == 1


def test_resume_is_bit_for_bit(digits, tmp_path):
    """3 epochs in one go == 1 epoch, checkpoint, fresh objects (other seeds), 2 more epochs."""
    full, loader = _run(digits)
    full.fit(loader, epochs=3, progress=False)

    first, loader = _run(digits)
    path = tmp_path / "model.npz"
    first.fit(loader, epochs=1, callbacks=[ModelCheckpoint(path)], progress=False)

    xpnn.manual_seed(123)  # a different global state: the checkpoint must restore it
    resumed, loader = _run(digits, seed=7, loader_seed=8)
    start = resumed.restore(path, loader=loader)
    assert start == 1 and resumed.history.epochs == 1
    resumed.fit(loader, epochs=3, start_epoch=start, progress=False)

    for name, value in full.model.state_dict().items():
        np.testing.assert_array_equal(resumed.model.state_dict()[name], value, err_msg=name)
    assert resumed.history["loss"] == full.history["loss"]
    assert resumed.history["lr"] == full.history["lr"] == [3e-3, 1.5e-3, 7.5e-4]
    assert xpnn.random.get_rng_state() == full_rng_state(digits)


def full_rng_state(digits):
    full, loader = _run(digits)
    full.fit(loader, epochs=3, progress=False)
    return xpnn.random.get_rng_state()


class InterruptAt:
    """A loader wrapper that raises KeyboardInterrupt at one batch of one epoch (Ctrl-C mid-epoch)."""

    def __init__(self, loader, epoch, step):
        self.loader, self.epoch, self.step, self.calls = loader, epoch, step, 0

    def __len__(self):
        return len(self.loader)

    def state_dict(self):
        return self.loader.state_dict()

    def __iter__(self):
        epoch, self.calls = self.calls, self.calls + 1
        for i, batch in enumerate(self.loader):
            if epoch == self.epoch and i == self.step:
                raise KeyboardInterrupt
            yield batch


def test_keyboard_interrupt_mid_epoch_keeps_last_checkpoint(digits, tmp_path):
    trainer, loader = _run(digits)
    path = tmp_path / "model.npz"
    saver = ModelCheckpoint(path)
    snapshots = []

    class Snapshot(ModelCheckpoint):
        def on_epoch_end(self, epoch, logs):
            snapshots.append(_params(self.trainer.model))

    with pytest.raises(KeyboardInterrupt):
        trainer.fit(InterruptAt(loader, epoch=2, step=10), epochs=5, callbacks=[saver, Snapshot(None)], progress=False)
    assert saver.last_saved == 2 and _files(tmp_path) == ["model.npz"]
    ckpt = load_checkpoint(path)
    assert ckpt.epoch == 2 and len(ckpt.history["loss"]) == 2
    for name, value in snapshots[-1].items():
        np.testing.assert_array_equal(ckpt.model_state[name], value)


def test_checkpoint_of_another_model_is_rejected_and_changes_nothing(digits, tmp_path):
    trainer, _ = _run(digits)
    path = tmp_path / "model.npz"
    save_checkpoint(path, trainer.model, trainer.optimizer, config={"model": "mlp"})
    other = MLP([64, 16, 10], dropout=0.2)
    before = _params(other)
    with pytest.raises(CheckpointError, match=r"model.npz \(a 'mlp' model\) does not fit this MLP: 1.weight has shape \(64, 32\) in the checkpoint but \(64, 16\) in the model \(and 2 more\)$"):
        restore(path, other)
    deeper = MLP([64, 32, 32, 10], dropout=0.2)
    with pytest.raises(CheckpointError, match=r"does not fit this MLP: missing 7.weight, 7.bias; 4.weight has shape \(32, 10\)"):
        restore(path, deeper)
    for name, value in other.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    sgd = optim.SGD(trainer.model.parameters(), lr=0.1)
    with pytest.raises(CheckpointError, match="holds optimizer state of a Adam, not of a SGD"):
        restore(path, trainer.model, sgd)
    with pytest.raises(CheckpointError, match="holds no scheduler state"):
        restore(path, trainer.model, scheduler=optim.StepLR(trainer.optimizer, 1))


def test_unreadable_files_raise_checkpoint_error(digits, tmp_path):
    trainer, _ = _run(digits)
    good = tmp_path / "good.npz"
    save_checkpoint(good, trainer.model)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.npz")
    with pytest.raises(CheckpointError, match="is a directory"):
        load_checkpoint(tmp_path)
    (tmp_path / "text.npz").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match=r"text.npz: it is not an .npz \(zip\) archive"):
        load_checkpoint(tmp_path / "text.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(CheckpointError, match="it is empty"):
        load_checkpoint(tmp_path / "empty.npz")
    data = good.read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*truncated.npz"):
        load_checkpoint(tmp_path / "truncated.npz")
    np.savez(tmp_path / "plain.npz", a=np.zeros(3))
    with pytest.raises(CheckpointError, match="is not an xpnn checkpoint: it has no __meta__ entry"):
        load_checkpoint(tmp_path / "plain.npz")
    np.savez(tmp_path / "badmeta.npz", __meta__=np.array("{not json"))
    with pytest.raises(CheckpointError, match="metadata is not valid JSON"):
        load_checkpoint(tmp_path / "badmeta.npz")
    np.savez(tmp_path / "foreign.npz", __meta__=np.array(json.dumps({"format": "other"})))
    with pytest.raises(CheckpointError, match="is not an xpnn checkpoint"):
        load_checkpoint(tmp_path / "foreign.npz")
    with zipfile.ZipFile(good) as z:
        names = [n for n in z.namelist() if n != "model/1.weight.npy"]
        with zipfile.ZipFile(tmp_path / "partial.npz", "w") as out:
            for n in names:
                out.writestr(n, z.read(n))
    with pytest.raises(CheckpointError, match="partial.npz is corrupt: the metadata refers to array 'model/1.weight', which the archive lacks"):
        load_checkpoint(tmp_path / "partial.npz")


def test_unserialisable_config_is_a_clear_error(digits, tmp_path):
    trainer, _ = _run(digits)
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        save_checkpoint(tmp_path / "m.npz", trainer.model, config={"fn": object()})
    assert not os.listdir(tmp_path)

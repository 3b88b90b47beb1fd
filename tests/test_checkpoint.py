"""Checkpoints: round trip, pickle-free format, atomic writes, bit-for-bit resume, Ctrl-C safety,
and clear errors for a checkpoint that does not fit or cannot be read; a checkpoint is input, so
its metadata is checked against a schema and reading it is bounded by what the model implies."""

import io
import json
import os
import threading
import time
import tracemalloc
import zipfile

import numpy as np
import pytest

import xpnn
from xpnn import nn, optim
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
    with pytest.raises(CheckpointError, match=r"model.npz \(a 'mlp' model\) does not fit this MLP: 1.weight has shape \(32, 64\) in the checkpoint but \(16, 64\) in the model \(and 2 more\)$"):
        restore(path, other)
    deeper = MLP([64, 32, 32, 10], dropout=0.2)
    with pytest.raises(CheckpointError, match=r"does not fit this MLP: missing 7.weight, 7.bias; 4.weight has shape \(10, 32\)"):
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


# ---- checkpoints as input (issue 14) -----------------------------------------------------------


def small_run(seed=0):
    """A tiny MLP with Adam, StepLR and a shuffling loader over 20 random samples."""
    xpnn.manual_seed(seed)
    model = MLP([8, 6, 3])
    opt = optim.Adam(model.parameters(), lr=1e-2)
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    x = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    loader = DataLoader(x, np.arange(20) % 3, batch_size=10, shuffle=True, seed=1)
    return model, opt, sched, loader


def small_checkpoint(path):
    """Train ``small_run`` for an epoch (so the optimizer has state) and save everything to ``path``."""
    model, opt, sched, loader = small_run()
    trainer = Trainer(model, opt, scheduler=sched, verbose=False)
    trainer.fit(loader, epochs=1, progress=False)
    save_checkpoint(path, model, opt, sched, epoch=1, config={"model": "mlp"}, history=trainer.history, loader=loader)
    return path


def npz_entries(path):
    with zipfile.ZipFile(path) as z:
        return {name: z.read(name) for name in z.namelist()}


def write_npz(path, entries, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return path


def npy_bytes(array):
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
    return buffer.getvalue()


def read_meta(entries):
    return json.loads(str(np.load(io.BytesIO(entries["__meta__.npy"]))))


def with_meta(entries, meta):
    return {**entries, "__meta__.npy": npy_bytes(np.array(json.dumps(meta)))}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    return small_checkpoint(tmp_path_factory.mktemp("saved") / "model.npz")


def _state(*objects):
    """Copies of the objects' state, to show that a failed restore changed nothing."""
    return [json.dumps(_plain(obj.state_dict()), sort_keys=True) for obj in objects]


def _plain(obj):
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj.tolist() if isinstance(obj, (np.ndarray, np.generic)) else obj


def _edited(saved, tmp_path, edit):
    entries = npz_entries(saved)
    meta = read_meta(entries)
    edit(meta)
    return write_npz(tmp_path / "edited.npz", with_meta(entries, meta))


def _set(*keys_and_value):
    """An edit that sets meta[k1][k2]... = value."""
    *keys, last, value = keys_and_value

    def edit(meta):
        for key in keys:
            meta = meta[key]
        meta[last] = value

    return edit


def _rng_junk(meta):
    meta["rng"]["state"]["inc"] = -1


def _second_reference(meta):
    meta["model"]["state"]["1.bias"] = {"__array__": "model/1.weight"}


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set("epoch", -5), r"epoch: expected a whole number in \[0, 10,000,000\], found -5$"),
        (_set("epoch", 1e300), r"epoch: expected a whole number in \[0, 10,000,000\], found 1e\+300$"),
        (_set("epoch", True), r"epoch: expected a whole number .*, found True$"),
        (_set("version", "1"), r"has format version '1'; this xpnn reads versions 1, 2$"),
        (_set("version", 3), r"has format version 3; this xpnn reads versions 1, 2$"),
        (_set("model", "class", "os.system"), r"model\['class'\]: expected a class name, found 'os.system'$"),
        (_set("optimizer", "class", 7), r"optimizer\['class'\]: expected a class name, found 7$"),
        (_set("scheduler", "class", None), r"scheduler\['class'\]: expected a class name, found None$"),
        (_rng_junk, r"random generator state: expected state\['state'\]\['inc'\] to be an integer in \[0, 2\*\*128\), found -1"),
        (_set("history", "loss", "abc"), r"history\['loss'\]: expected a list, found 'abc'$"),
        (_set("history", "loss", [0.5, "x"]), r"history\['loss'\]\[1\]: expected a finite number or null, found 'x'$"),
        (_set("config", [1]), r"config: expected a dict, found \[1\]$"),
        (_set("extra", 1), r"the metadata's keys: expected some of .*, found \['extra'\]$"),
        (_set("optimizer", "state", "state", "0", "step", "x"), r"\['step'\]: expected an array or a finite number, found 'x'$"),
        (_set("optimizer", "state", "state", "x", {}), r"optimizer\['state'\]\['state'\] key: expected a parameter index, found 'x'$"),
        (_set("model", "state", "1.weight", {"__array__": "__meta__"}), r"model\['state'\]\['1.weight'\]: expected \{\"__array__\": <entry name>\}"),
        (_second_reference, r"model\['state'\]\['1.bias'\]: expected an array no other value refers to, found 'model/1.weight'$"),
    ],
)
def test_metadata_is_checked_against_its_schema_on_load(saved, tmp_path, edit, message):
    path = _edited(saved, tmp_path, edit)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


@pytest.mark.parametrize(
    "edit, message",
    [
        (_set("optimizer", "state", "state", "7", {"step": 1}), r"optimizer state for parameter 7, but this Adam has 4 parameters$"),
        (_set("optimizer", "state", "param_groups", 0, "lr", "fast"), r"optimizer param_groups\[0\]\['lr'\]: expected a finite number, found 'fast'$"),
        (_set("optimizer", "state", "param_groups", 0, "betas", [0.9]), r"optimizer param_groups\[0\]\['betas'\]: expected a list of 2 values, found \[0.9\]$"),
        (_set("optimizer", "state", "param_groups", 0, "lr", {"__array__": "nope"}), r"optimizer param_groups\[0\]\['lr'\]: expected a finite number, found \{'__array__': 'nope'\}$"),
        (_set("optimizer", "state", "param_groups", 0, "evil", "x"), r"optimizer param_groups\[0\]\['evil'\]: expected a finite number, found 'x'$"),
        (_set("optimizer", "state", "param_groups", 0, "params", [3, 2, 1, 0]), r"param_groups\[0\]\['params'\]: expected \[0, 1, 2, 3\], found \[3, 2, 1, 0\]$"),
        (_set("scheduler", "state", "last_epoch", "x"), r"scheduler state\['last_epoch'\]: expected a finite number, found 'x'$"),
        (_set("scheduler", "state", "evil", 1), r"scheduler state: expected a dict with keys \['base_lrs', 'gamma', 'last_epoch', 'step_size'\]"),
        (_set("loader", "generator", "has_uint32", 5), r"loader state\['generator'\]: random generator state: expected state\['has_uint32'\]"),
    ],
)
def test_state_that_does_not_fit_the_live_objects_is_refused_and_changes_nothing(saved, tmp_path, edit, message):
    path = _edited(saved, tmp_path, edit)
    model, opt, sched, loader = small_run(seed=3)
    before = _state(model, opt, sched, loader)
    with pytest.raises(CheckpointError, match=message):
        restore(path, model, opt, sched, loader)
    assert _state(model, opt, sched, loader) == before


def test_random_state_setter_refuses_junk_and_keeps_the_generator():
    before = xpnn.random.get_rng_state()
    with pytest.raises(xpnn.errors.ConfigError, match=r"expected state\['bit_generator'\] to be 'PCG64', found 'MT19937'"):
        xpnn.random.set_rng_state({**before, "bit_generator": "MT19937"})
    with pytest.raises(xpnn.errors.ConfigError, match=r"expected state\['uinteger'\] to be an integer in \[0, 2\*\*32\), found True"):
        xpnn.random.set_rng_state({**before, "uinteger": True})
    with pytest.raises(xpnn.errors.ConfigError, match=r"expected state to be a dict with keys bit_generator, state, has_uint32, uinteger, found None"):
        xpnn.random.set_rng_state(None)
    assert xpnn.random.get_rng_state() == before


def _replace_entry(saved, tmp_path, name, array):
    entries = npz_entries(saved)
    entries[name] = npy_bytes(array)
    return write_npz(tmp_path / "replaced.npz", entries)


@pytest.mark.parametrize("dtype", ["complex64", "<U3", "int32", "bool"])
def test_optimizer_state_of_a_non_float_dtype_is_refused_on_load(saved, tmp_path, dtype):
    path = _replace_entry(saved, tmp_path, "optimizer/state/0/exp_avg.npy", np.zeros((6, 8), dtype))
    with pytest.raises(CheckpointError, match=rf"entry 'optimizer/state/0/exp_avg' has dtype {np.dtype(dtype)}, expected a floating dtype \(float16, float32, float64\)$"):
        load_checkpoint(path)


@pytest.mark.parametrize("dtype", ["int32", "bool"])
def test_weights_of_an_integer_or_bool_dtype_are_refused_not_cast(saved, tmp_path, dtype):
    path = _replace_entry(saved, tmp_path, "model/1.weight.npy", np.ones((6, 8), dtype))
    model = small_run()[0]
    before = _state(model)
    with pytest.raises(CheckpointError, match=rf"does not fit this MLP: 1.weight has dtype {dtype} in the checkpoint but float32 in the model$"):
        restore(path, model)
    assert _state(model) == before


@pytest.mark.parametrize("dtype", ["complex128", "<U3", "S3"])
def test_weights_of_a_complex_or_string_dtype_are_refused_on_load(saved, tmp_path, dtype):
    path = _replace_entry(saved, tmp_path, "model/1.weight.npy", np.zeros((6, 8), dtype))
    with pytest.raises(CheckpointError, match=rf"entry 'model/1.weight' has dtype {np.dtype(dtype)}, expected a floating dtype, or an integer or bool dtype"):
        load_checkpoint(path)


def test_integer_buffers_round_trip(tmp_path):
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    model.forward(np.ones((5, 4), np.float32))
    path = save_checkpoint(tmp_path / "bn.npz", model)
    other = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))
    restore(path, other)
    assert _state(other) == _state(model)
    assert other.state_dict()["1.num_batches_tracked"].dtype == np.int64


def test_unknown_entries_are_refused(saved, tmp_path):
    entries = npz_entries(saved)
    write_npz(tmp_path / "extra.npz", {**entries, "evil.npy": npy_bytes(np.zeros(3))})
    with pytest.raises(CheckpointError, match=r"extra.npz is corrupt: unknown entry 'evil.npy' \(the metadata refers to no such array\)$"):
        load_checkpoint(tmp_path / "extra.npz")
    write_npz(tmp_path / "text.npz", {**entries, "notes.txt": b"hello"})
    with pytest.raises(CheckpointError, match=r"unknown entry 'notes.txt' \(expected .npy arrays only\)$"):
        load_checkpoint(tmp_path / "text.npz")


def test_entry_whose_size_does_not_match_its_header_is_refused(saved, tmp_path):
    entries = npz_entries(saved)
    entries["model/1.weight.npy"] += bytes(100)
    write_npz(tmp_path / "longer.npz", entries)
    with pytest.raises(CheckpointError, match=r"entry 'model/1.weight' declares 420 bytes in the zip directory, but its header \(shape \(6, 8\), float32\) implies 320$"):
        load_checkpoint(tmp_path / "longer.npz")


def _deflated_zeros(zf, name, header, size):
    """Write ``header`` and ``size`` zero bytes as one deflated entry (about 1/1000 of the size)."""
    with zf.open(name, "w", force_zip64=True) as f:
        f.write(header)
        chunk = bytes(2**24)
        for start in range(0, size, len(chunk)):
            f.write(chunk[: size - start])


@pytest.fixture(scope="module")
def bomb(saved, tmp_path_factory):
    """``saved`` with model/1.weight replaced by a 16384 x 16384 float32 array of zeros: 1 GiB
    decompressed, about 1 MB in the file."""
    path = tmp_path_factory.mktemp("bomb") / "bomb.npz"
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (2**14, 2**14)})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for name, data in npz_entries(saved).items():
            if name == "model/1.weight.npy":
                _deflated_zeros(zf, name, header.getvalue(), 2**30)
            else:
                zf.writestr(name, data)
    assert path.stat().st_size < 2**30 // 500
    return path


def _bounded(call, limit=32 * 2**20):
    """Run ``call``; assert it took under ``limit`` bytes of traced memory and 2 seconds."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        call()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < limit and time.perf_counter() - start < 2, (peak, time.perf_counter() - start)


def test_a_compressed_entry_of_a_gigabyte_is_refused_before_it_is_decompressed(bomb):
    ckpt = None

    def load():
        nonlocal ckpt
        ckpt = load_checkpoint(bomb)

    _bounded(load)  # headers only
    model = small_run()[0]
    before = _state(model)

    def restore_model():
        with pytest.raises(CheckpointError, match=r"1.weight has shape \(16384, 16384\) in the checkpoint but \(6, 8\) in the model$"):
            ckpt.restore(model)

    _bounded(restore_model)
    assert _state(model) == before

    def read_without_model():
        with pytest.raises(CheckpointError, match=r"its arrays would decompress to 1,073,\d{3},\d{3} bytes from a [\d,]+-byte file \(more than 100x\); restore it into a model"):
            ckpt.model_state

    _bounded(read_without_model)


def test_metadata_larger_than_the_cap_is_refused_before_it_is_read(saved, tmp_path):
    path = tmp_path / "meta.npz"
    size = checkpoint_module.MAX_META_BYTES + 4
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": f"<U{size // 4}", "fortran_order": False, "shape": ()})
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        _deflated_zeros(zf, "__meta__.npy", header.getvalue(), size)
    with pytest.raises(CheckpointError, match=r"meta.npz is corrupt: its metadata takes 67,108,\d+ bytes, expected at most 67,108,864$"):
        _bounded(lambda: load_checkpoint(path))


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    errors = []

    def load():
        try:
            load_checkpoint(fifo)
        except CheckpointError as exc:
            errors.append(str(exc))

    reader = threading.Thread(target=load, daemon=True)
    reader.start()
    reader.join(timeout=10)
    assert not reader.is_alive(), "load_checkpoint waited on a FIFO"
    assert errors == [f"checkpoint {fifo} is a FIFO (named pipe), expected a regular .npz file"]


def test_a_random_file_starting_with_pk_is_not_a_valid_npz_and_gets_no_pickle_advice(tmp_path):
    path = tmp_path / "pk.npz"
    path.write_bytes(b"PK" + np.random.default_rng(0).bytes(300))
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*pk.npz: not a valid .npz file, or truncated \(BadZipFile") as info:
        load_checkpoint(path)
    assert "pickle" not in str(info.value)
    npy = tmp_path / "one.npz"
    np.save(npy.with_suffix(".npy"), np.zeros(3))
    npy.with_suffix(".npy").rename(npy)
    with pytest.raises(CheckpointError, match=r"one.npz: it holds a single array \(.npy\), not an xpnn checkpoint \(.npz\)$"):
        load_checkpoint(npy)


def test_a_checkpoint_replaced_after_loading_is_not_mixed_in(saved, tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(saved.read_bytes())
    ckpt = load_checkpoint(path)
    model, opt, sched, _ = small_run(seed=2)
    save_checkpoint(path, model, opt, sched, epoch=2)
    with pytest.raises(CheckpointError, match=r"model.npz changed on disk after it was loaded; load it again$"):
        ckpt.restore(small_run()[0])


def test_a_refused_optimizer_state_rolls_the_model_back_and_names_the_checkpoint(saved):
    model, opt, sched, loader = small_run(seed=4)
    before = _state(model, opt)

    def refuse(state):
        raise xpnn.errors.ConfigError("Adam.load_state_dict: expected lr >= 0, got -1")

    opt.load_state_dict = refuse
    with pytest.raises(CheckpointError, match=r"model.npz \(a 'mlp' model\) does not fit this Adam: Adam.load_state_dict: expected lr >= 0, got -1$") as info:
        restore(saved, model, opt)
    assert isinstance(info.value.__cause__, xpnn.errors.ConfigError)
    assert _state(model, opt) == before

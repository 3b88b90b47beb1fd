"""Trainer: learning on the bundled digits, History, NaN/inf detection naming epoch and step,
read-backs once per log interval (not per step), callbacks, early stopping, evaluate and predict."""

import json
import re
import warnings

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn import nn, optim
from xpnn.data import DataLoader, load_dataset
from xpnn.errors import ArgumentTypeError, ConfigError, DivergenceWarning, NonFiniteLossError, ShapeError
from xpnn.models import MLP
from xpnn.train import Callback, EarlyStopping, History, ModelCheckpoint, Trainer, WarnOnDivergence, load_checkpoint
from xpnn.train import trainer as trainer_module


@pytest.fixture(scope="module")
def digits():
    x, y = load_dataset("digits").arrays()
    xt, yt = load_dataset("digits", train=False).arrays()
    return x, y, xt, yt


def _setup(digits, seed=0, lr=3e-3, dropout=0.0, batch_size=64, **trainer_kwargs):
    x, y, xt, yt = digits
    xpnn.manual_seed(seed)
    model = MLP([64, 64, 10], dropout=dropout)
    opt = optim.Adam(model.parameters(), lr=lr)
    trainer = Trainer(model, opt, verbose=False, **trainer_kwargs)
    return trainer, DataLoader(x, y, batch_size, shuffle=True, seed=seed), DataLoader(xt, yt, 256)


def test_fit_learns_digits_and_records_history(digits):
    trainer, train, valid = _setup(digits, scheduler=None)
    history = trainer.fit(train, epochs=3, valid=valid, progress=False)
    assert history is trainer.history and isinstance(history, History)
    assert set(history) == {"loss", "acc", "val_loss", "val_acc", "epoch_time", "lr"}
    assert all(len(v) == 3 for v in history.values()) and history.epochs == 3
    assert history["val_acc"][-1] > 0.9
    assert history["loss"][0] > history["loss"][-1]
    assert all(isinstance(v, float) for values in history.values() for v in values)
    assert json.loads(json.dumps(history)) == history  # a plain dict of lists of floats
    assert trainer.epoch == 3
    result = trainer.evaluate(valid)
    assert set(result) == {"loss", "accuracy"}
    assert result["accuracy"] == pytest.approx(history["val_acc"][-1]) and result["loss"] == pytest.approx(history["val_loss"][-1])


def test_history_without_validation_or_metrics(digits):
    trainer, train, _ = _setup(digits, metrics=())
    history = trainer.fit(train, epochs=2, progress=False)
    assert [len(history[k]) for k in ("loss", "acc", "val_loss", "val_acc", "epoch_time", "lr")] == [2, 0, 0, 0, 2, 2]
    assert trainer.evaluate(train).keys() == {"loss"}


def test_scheduler_is_stepped_once_per_epoch_and_lr_recorded(digits):
    x, y, _, _ = digits
    xpnn.manual_seed(0)
    model = MLP([64, 16, 10])
    opt = optim.SGD(model.parameters(), lr=0.1)
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    history = Trainer(model, opt, scheduler=sched, verbose=False).fit(DataLoader(x, y, 128), epochs=3, progress=False)
    assert history["lr"] == [0.1, 0.05, 0.025]
    assert opt.param_groups[0]["lr"] == 0.0125


def test_scheduler_stepped_per_batch(digits):
    x, y, _, _ = digits
    xpnn.manual_seed(0)
    model = MLP([64, 16, 10])
    opt = optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(x, y, 128)  # 12 steps per epoch
    sched = optim.CosineAnnealingLR(opt, T_max=2 * len(loader))
    history = Trainer(model, opt, scheduler=sched, scheduler_interval="step", verbose=False).fit(loader, epochs=2, progress=False)
    assert sched.last_epoch == 24 and opt.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    assert history["lr"] == [0.1, pytest.approx(0.05)]
    with pytest.raises(ConfigError, match="Trainer: expected scheduler_interval 'epoch' or 'step', got 'batch'"):
        Trainer(model, opt, scheduler=sched, scheduler_interval="batch")


class NanAtStep(nn.CrossEntropyLoss):
    """Cross-entropy that returns NaN (or inf) at one global step."""

    def __init__(self, step, value=float("nan")):
        super().__init__()
        self.calls, self.bad_step, self.value = 0, step, value

    def forward(self, input, target):
        loss = super().forward(input, target)
        self.calls += 1
        if self.calls == self.bad_step:
            return loss * self.value
        return loss


@pytest.mark.parametrize("log_every", [1, 5, 50])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_loss_names_epoch_and_step(digits, log_every, value):
    trainer, train, _ = _setup(digits, log_every=log_every, loss_fn=NanAtStep(23 + 7, value))  # 23 steps per epoch
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss \((nan|inf)\) at epoch 2, step 7 of 23.*lower the learning rate"):
        trainer.fit(train, epochs=3, progress=False)
    assert len(trainer.history["loss"]) == 1
    calls = trainer.loss_fn.calls
    assert calls - 30 < log_every, "training must stop at the first read-back after the bad step"


def test_diverging_run_raises(digits):
    x, y, _, _ = digits
    xpnn.manual_seed(0)
    model = MLP([64, 64, 10])
    trainer = Trainer(model, optim.SGD(model.parameters(), lr=1e6), verbose=False, log_every=5)
    with np.errstate(all="ignore"), pytest.raises(NonFiniteLossError, match=r"at epoch 1, step \d+ of 23"):
        trainer.fit(DataLoader(x, y, 64), epochs=2, progress=False)


def test_losses_are_read_back_once_per_log_interval_not_per_step(digits, monkeypatch):
    calls = []
    real = xb.to_numpy
    monkeypatch.setattr(trainer_module.backend, "to_numpy", lambda a: calls.append(a.shape) or real(a))
    trainer, train, _ = _setup(digits, log_every=10)
    trainer.fit(train, epochs=2, progress=False)
    # the fit's first step alone (where the loss started), then windows of 10 steps and the epoch's
    # rest: 23 steps -> 1, 10, 10, 2, then 10, 10, 3; each read-back fetches losses and correct counts
    windows = [1, 10, 10, 2, 10, 10, 3]
    assert calls == [(n,) for n in windows for _ in range(2)]


def test_callback_hooks_order_and_logs(digits):
    events = []

    class Recorder(Callback):
        def on_train_begin(self):
            events.append("train_begin")

        def on_epoch_begin(self, epoch):
            events.append(f"epoch_begin {epoch}")

        def on_epoch_end(self, epoch, logs):
            assert self.trainer.epoch == epoch + 1
            events.append(f"epoch_end {epoch} {sorted(logs)}")

        def on_train_end(self, history):
            events.append(f"train_end {history.epochs}")

    trainer, train, valid = _setup(digits)
    trainer.fit(train, epochs=2, valid=valid, callbacks=[Recorder()], progress=False)
    keys = sorted(["loss", "acc", "val_loss", "val_acc", "epoch_time", "lr"])
    assert events == ["train_begin", "epoch_begin 0", f"epoch_end 0 {keys}", "epoch_begin 1", f"epoch_end 1 {keys}", "train_end 2"]


def test_early_stopping_stops_and_restores_best_weights(digits):
    trainer, train, valid = _setup(digits, lr=3e-3)
    snapshots = []

    class Snapshot(Callback):
        def on_epoch_end(self, epoch, logs):
            snapshots.append(trainer.model.state_dict())

    stopper = EarlyStopping(monitor="val_acc", patience=2, min_delta=10.0, restore_best_weights=True)  # nothing beats epoch 0 by 10
    history = trainer.fit(train, epochs=20, valid=valid, callbacks=[Snapshot(), stopper], progress=False)
    assert history.epochs == 3 and stopper.stopped_epoch == 2 and stopper.best_epoch == 0 and stopper.mode == "max"
    for name, value in trainer.model.state_dict().items():
        np.testing.assert_array_equal(value, snapshots[0][name])


def test_early_stopping_min_mode_and_missing_monitor(digits):
    stopper = EarlyStopping(patience=1)
    assert stopper.mode == "min" and stopper.monitor == "val_loss"
    trainer, train, _ = _setup(digits)
    with pytest.raises(ConfigError, match=r"EarlyStopping: monitor 'val_loss' is not among this epoch's values \[.*'loss'.*\]; pass valid= to fit for val_\* values$"):
        trainer.fit(train, epochs=1, callbacks=[stopper], progress=False)


def test_fit_prints_one_summary_line_per_epoch_and_no_bar_when_disabled(digits, capsys):
    trainer, train, valid = _setup(digits)
    trainer.verbose = True
    trainer.fit(train, epochs=2, valid=valid, progress=False)
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert len(lines) == 2 and err == ""
    assert lines[1].startswith("epoch 2/2  loss ")
    for part in ("acc ", "val_loss ", "val_acc ", "s  lr 0.003"):
        assert part in lines[1]


def test_progress_bar_goes_to_stderr(digits, capsys):
    trainer, train, _ = _setup(digits, log_every=5)
    trainer.fit(train, epochs=1, progress=True)
    out, err = capsys.readouterr()
    assert "epoch 1/1" in err and "loss" in err and out == ""


def test_fit_resumes_history_from_start_epoch(digits):
    trainer, train, _ = _setup(digits)
    trainer.fit(train, epochs=3, progress=False)
    trainer.fit(train, epochs=4, start_epoch=2, progress=False)
    assert trainer.history.epochs == 4


def test_predict_array_and_loader(digits):
    trainer, train, valid = _setup(digits)
    trainer.fit(train, epochs=2, progress=False)
    _, _, xt, yt = digits
    labels = trainer.predict(xt, batch_size=100)
    assert labels.shape == (360,) and labels.dtype == np.int64
    np.testing.assert_array_equal(labels, trainer.predict(valid))
    logits = trainer.predict(xt.astype(np.float64), logits=True)
    assert logits.shape == (360, 10) and logits.dtype == np.float32
    assert trainer.model.training, "predict and evaluate must restore the training mode"
    assert (labels == yt).mean() == pytest.approx(trainer.evaluate(valid)["accuracy"])


def test_fit_on_every_backend(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    xpnn.manual_seed(0)
    model = MLP([8, 16, 2], dropout=0.1, xp=backend.device)
    trainer = Trainer(model, optim.Adam(model.parameters(), lr=3e-2), verbose=False, log_every=2)
    loader = DataLoader(x, y, 16, shuffle=True, seed=0, device=backend.device)
    history = trainer.fit(loader, epochs=6, valid=DataLoader(x, y, 32, device=backend.device), progress=False)
    assert history["val_acc"][-1] > 0.9
    assert type(trainer.predict(x)) is xb.array_type(backend.xp)


def test_constructor_rejects_unknown_metric_and_unreduced_loss(digits):
    model = MLP([4, 2])
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="Trainer: unknown metric 'f1'; expected one of: accuracy"):
        Trainer(model, opt, metrics=("f1",))
    with pytest.raises(ConfigError, match="Trainer: expected a loss with reduction 'mean' or 'sum', got 'none'"):
        Trainer(model, opt, loss_fn=nn.CrossEntropyLoss(reduction="none"))
    with pytest.raises(ConfigError, match="Trainer: expected log_every >= 1, got 0"):
        Trainer(model, opt, log_every=0)


def test_early_stopping_rejects_an_unknown_mode():
    with pytest.raises(ConfigError, match="EarlyStopping: expected mode 'auto', 'min' or 'max', got 'up'"):
        EarlyStopping(mode="up")


# ---- nothing silent: empty inputs, divergence (issue 14) ----------------------------------------


def test_fit_and_evaluate_refuse_a_loader_with_no_batches(digits):
    trainer, _, _ = _setup(digits)
    with pytest.raises(ConfigError, match=r"Trainer.fit: the training loader yields no batches \(an empty dataset\?\); expected at least one"):
        trainer.fit([], epochs=1, progress=False)
    with pytest.raises(ConfigError, match=r"Trainer.fit: the training loader yielded no samples in epoch 1; expected at least one batch"):
        trainer.fit(iter(()), epochs=1, progress=False)
    with pytest.raises(ConfigError, match=r"Trainer.evaluate: the loader yielded no samples \(an empty dataset\?\)"):
        trainer.evaluate([])
    assert trainer.history.epochs == 0


@pytest.mark.parametrize("batch_size", [0, -1, 2.5, True])
def test_predict_refuses_a_batch_size_that_is_not_a_positive_integer(digits, batch_size):
    trainer, _, _ = _setup(digits)
    with pytest.raises(ConfigError, match=rf"Trainer.predict: expected batch_size a positive integer, got {batch_size!r}"):
        trainer.predict(digits[2], batch_size=batch_size)


def test_predict_of_no_inputs_is_empty(digits):
    trainer, _, _ = _setup(digits)
    empty = digits[2][:0]
    assert trainer.predict(empty).shape == (0,)
    assert trainer.predict(empty, logits=True).shape == (0, 10)
    with pytest.raises(ConfigError, match="Trainer.predict: the loader yielded no batches; expected at least one"):
        trainer.predict([])


def test_model_checkpoint_does_not_save_a_diverged_epoch(digits, tmp_path):
    class PoisonAtSecondEpoch(Callback):
        def on_epoch_end(self, epoch, logs):
            if epoch == 0:
                next(iter(self.trainer.model.parameters())).data[...] = np.inf

    trainer, train, valid = _setup(digits)
    saver = ModelCheckpoint(tmp_path / "model.npz")
    with pytest.raises(NonFiniteLossError, match=r"is NaN or infinite at the end of epoch 2 \(the training loss stayed finite|non-finite loss"), np.errstate(all="ignore"):
        trainer.fit(train, epochs=3, valid=valid, callbacks=[saver, PoisonAtSecondEpoch()], progress=False)
    assert saver.last_saved == 1 and load_checkpoint(tmp_path / "model.npz").epoch == 1


def test_model_checkpoint_names_non_finite_optimizer_state_and_validation_loss(digits, tmp_path):
    trainer, train, valid = _setup(digits)
    trainer.fit(train, epochs=1, progress=False)
    saver = ModelCheckpoint(tmp_path / "model.npz")
    saver.set_trainer(trainer)
    state = next(iter(trainer.optimizer.state.values()))
    state["exp_avg_sq"][...] = np.nan
    with pytest.raises(NonFiniteLossError, match=r"optimizer state 'exp_avg_sq' of parameter 0 is NaN or infinite at the end of epoch 1"):
        saver.on_epoch_end(0, {"loss": 0.1})
    state["exp_avg_sq"][...] = 0.0
    with pytest.raises(NonFiniteLossError, match=r"the validation loss \(inf\) is NaN or infinite at the end of epoch 1"):
        saver.on_epoch_end(0, {"loss": 0.1, "val_loss": float("inf")})
    assert not (tmp_path / "model.npz").exists()
    saver.on_epoch_end(0, {"loss": 0.1, "val_loss": 0.2})
    assert load_checkpoint(tmp_path / "model.npz").epoch == 1


def test_warn_on_divergence_warns_once_when_the_loss_climbs_and_never_on_a_normal_run(digits):
    trainer, train, _ = _setup(digits, lr=50.0)
    with pytest.warns(DivergenceWarning, match=r"the training loss rose from [\d.]+ \(the first step\) to .* \(epoch 1's mean\): .*learning rate \(50\)") as seen:
        trainer.fit(train, epochs=3, callbacks=[WarnOnDivergence()], progress=False)
    assert len([w for w in seen if issubclass(w.category, DivergenceWarning)]) == 1

    trainer, train, _ = _setup(digits)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        trainer.fit(train, epochs=3, callbacks=[WarnOnDivergence()], progress=False)
    with pytest.raises(ConfigError, match="WarnOnDivergence: expected factor > 1, got 1"):
        WarnOnDivergence(factor=1)


# ---- arrays, datasets and loaders alike (issue 15) -----------------------------------------------


def test_fit_takes_arrays_a_dataset_or_a_loader_and_evaluate_likewise(digits):
    x, y, xt, yt = digits
    xpnn.manual_seed(0)
    model = MLP([64, 64, 10])
    trainer = Trainer(model, optim.Adam(model.parameters(), lr=3e-3), verbose=False)
    history = trainer.fit((x.astype(np.float64), y), epochs=2, valid=(xt, yt), batch_size=64, progress=False)
    assert history["val_acc"][-1] > 0.8 and isinstance(trainer.train_loader, DataLoader)
    assert trainer.train_loader.batch_size == 64 and trainer.train_loader.shuffle
    assert trainer.train_loader.x.dtype == np.float32, "arrays take the model's dtype, as in predict"
    by_arrays = trainer.evaluate((xt, yt))
    assert trainer.evaluate(load_dataset("digits", train=False)) == by_arrays
    assert trainer.evaluate(DataLoader(xt, yt, 100)) == pytest.approx(by_arrays)
    assert trainer.evaluate((xt, yt), batch_size=7) == pytest.approx(by_arrays)
    trainer.fit(load_dataset("digits"), epochs=3, start_epoch=2, progress=False)
    assert trainer.train_loader.batch_size == 32 and trainer.history.epochs == 3


def test_fit_with_arrays_is_reproducible_from_the_seed(digits):
    x, y, _, _ = digits

    def run():
        xpnn.manual_seed(3)
        model = MLP([64, 16, 10])
        Trainer(model, optim.Adam(model.parameters(), lr=3e-3), verbose=False).fit((x, y), epochs=1, progress=False)
        return [xb.to_numpy(v) for v in model.state_dict().values()]

    for a, b in zip(run(), run(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_fit_with_arrays_on_every_backend(backend):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((96, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    xpnn.manual_seed(0)
    model = MLP([8, 16, 2], xp=backend.device)
    trainer = Trainer(model, optim.Adam(model.parameters(), lr=3e-2), verbose=False)
    history = trainer.fit((x, y), epochs=4, valid=(x, y), batch_size=16, progress=False)
    assert history["val_acc"][-1] > 0.9
    assert type(trainer.train_loader.x) is xb.array_type(backend.xp)


@pytest.mark.parametrize("train, kind, message", [
    ((np.zeros((4, 64), np.float32), np.zeros(4, np.int64), np.zeros(4)), ShapeError,
     r"^Trainer.fit: expected an \(x, y\) tuple of two arrays, found a tuple of 3 items \(shape \(4, 64\), shape \(4,\), shape \(4,\)\)$"),
    ((np.zeros((4, 64), np.float32), np.zeros(5, np.int64)), ShapeError,
     r"^DataLoader: expected x and y of the same length, got x of shape \(4, 64\) and y of shape \(5,\)$"),
    ("digits", ArgumentTypeError,
     r"^Trainer.fit: expected x and y arrays, an \(x, y\) tuple, or a Dataset from xpnn.data.load_dataset, found str 'digits' \(load a dataset first: xpnn.data.load_dataset\('digits'\)\)$"),
    ({"x": 0, "y": 1}, ArgumentTypeError, r"^Trainer.fit: expected .*, found dict with keys \['x', 'y'\]; pass \(x, y\)$"),
    (np.zeros((4, 64), np.float32), ArgumentTypeError, r"^Trainer.fit: expected .*, found only x \(array of shape \(4, 64\)\) and no y; pass \(x, y\)$"),
    ([np.zeros((4, 64), np.float32), np.zeros(4)], ArgumentTypeError,
     r"^Trainer.fit: expected a loader, an \(x, y\) tuple or a Dataset, found a list of 2 arrays; pass a tuple \(x, y\)$"),
    (3.5, ArgumentTypeError, r"^Trainer.fit: expected .*, found float 3.5$"),
    (None, ArgumentTypeError, r"^Trainer.fit: expected .*, found NoneType None$"),
    ((object(), np.zeros(4)), ArgumentTypeError, r"^Trainer.fit: expected x to be an array \(NumPy, CuPy, any Array API array\) or a list, found object$"),
])
def test_fit_names_each_wrong_form_of_data(digits, train, kind, message):
    trainer, _, _ = _setup(digits)
    with pytest.raises(kind, match=message):
        trainer.fit(train, epochs=1, progress=False)
    assert trainer.history.epochs == 0


def test_fit_refuses_keras_positional_arrays_and_bad_epochs(digits):
    x, y, _, _ = digits
    trainer, loader, _ = _setup(digits)
    with pytest.raises(ArgumentTypeError, match=r"^Trainer.fit: expected epochs, a positive int, found an array of shape \(1437,\); pass the arrays as one tuple: fit\(\(x, y\), epochs=...\)$"):
        trainer.fit(x, y)
    for bad in (2.0, -1, "3", True):
        with pytest.raises(ConfigError, match=rf"^Trainer.fit: expected epochs, a non-negative int \(the total, counting start_epoch=0\), found {re.escape(repr(bad))}$"):
            trainer.fit(loader, bad, progress=False)


def test_batch_size_and_shuffle_with_a_loader_are_refused(digits):
    trainer, loader, valid = _setup(digits)
    with pytest.raises(ConfigError, match=r"^Trainer.fit: batch_size=16 applies only to arrays; found a loader \(DataLoader\), which batches by itself: set them on the loader$"):
        trainer.fit(loader, 1, batch_size=16, progress=False)
    with pytest.raises(ConfigError, match=r"^Trainer.fit: batch_size=16 and shuffle=False apply only to arrays"):
        trainer.fit(loader, 1, batch_size=16, shuffle=False, progress=False)
    with pytest.raises(ConfigError, match=r"^Trainer.evaluate: batch_size=8 applies only to arrays; found a loader \(DataLoader\)"):
        trainer.evaluate(valid, batch_size=8)
    with pytest.raises(ConfigError, match=r"^DataLoader: expected batch_size to be a positive int, got 0$"):
        trainer.fit(digits[:2], 1, batch_size=0, progress=False)


def test_valid_and_evaluate_name_their_wrong_forms(digits):
    trainer, loader, _ = _setup(digits)
    with pytest.raises(ShapeError, match=r"^Trainer.fit valid: expected an \(x, y\) tuple of two arrays, found a tuple of 1 item"):
        trainer.fit(loader, 1, valid=(digits[2],), progress=False)
    with pytest.raises(ArgumentTypeError, match=r"^Trainer.evaluate: expected .*found str 'test'"):
        trainer.evaluate("test")


def test_evaluate_and_predict_keep_no_backward_cache(digits):
    trainer, train, valid = _setup(digits)
    trainer.fit(train, epochs=1, progress=False)
    for infer in (lambda: trainer.evaluate(valid), lambda: trainer.predict(digits[2])):
        infer()
        kept = [(type(m).__name__, name) for m in trainer.model.modules() for name in getattr(type(m), "_cache", ()) if getattr(m, name, None) is not None]
        assert kept == []

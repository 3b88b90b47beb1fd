"""Callbacks: hooks the Trainer calls around training and around each epoch (never per batch, so
they cost nothing inside the training step)."""

import math
import warnings

from ..errors import ConfigError, DivergenceWarning, NonFiniteLossError
from ..files import signals_held
from .checkpoint import save_checkpoint
from .finite import non_finite_state


class Callback:
    """Override any of the hooks; ``self.trainer`` is set when ``fit`` starts. ``epoch`` is
    0-based; ``logs`` is the epoch's record (``{"loss": ..., "acc": ..., "val_loss": ..., ...}``).
    Set ``self.trainer.stop_training = True`` to end training after the current epoch."""

    trainer = None

    def set_trainer(self, trainer):
        self.trainer = trainer

    def on_train_begin(self):
        pass

    def on_epoch_begin(self, epoch):
        pass

    def on_epoch_end(self, epoch, logs):
        pass

    def on_train_end(self, history):
        pass


class ModelCheckpoint(Callback):
    """Save a checkpoint to ``path`` at the end of every epoch: model, optimizer, scheduler, the
    training DataLoader's shuffle state, the global random state, ``config`` and the history, for a
    bit-for-bit resume.

    Nothing is lost: the write is atomic and holds Ctrl-C and SIGTERM until it is complete (a
    second signal rolls it back), so an interrupted run keeps a whole checkpoint; and an epoch that
    ends with a NaN or infinite weight, optimizer state or validation loss is not saved: it raises
    :class:`~xpnn.errors.NonFiniteLossError` and the previous checkpoint stays the last good one.
    ``last_saved`` is the epoch of the latest checkpoint written (None before the first)."""

    rank_zero_only = True  # in a data-parallel fit only rank 0 writes (xpnn.distributed)

    def __init__(self, path, config=None):
        self.path = path
        self.config = dict(config or {})
        self.last_saved = None

    def on_epoch_end(self, epoch, logs):
        t = self.trainer
        self._check_finite(epoch, logs)
        with signals_held():  # a signal held here is raised on leaving the block, once last_saved is true
            save_checkpoint(
                self.path, t.model, t.optimizer, t.scheduler, epoch=epoch + 1, config=self.config, history=t.history, loader=t.train_loader
            )
            self.last_saved = epoch + 1

    def _check_finite(self, epoch, logs):
        t = self.trainer
        problem = non_finite_state(t.model, t.optimizer)
        val_loss = logs.get("val_loss")
        if problem is None and val_loss is not None and not math.isfinite(val_loss):
            problem = f"the validation loss ({val_loss})"
        if problem is None:
            return
        lr = f"; learning rate {t.last_step_lr:g} at its last step" if t.last_step_lr is not None else ""
        raise NonFiniteLossError(
            f"{problem} is NaN or infinite at the end of epoch {epoch + 1} (the training loss stayed finite{lr}): "
            f"training diverged, so epoch {epoch + 1} was not saved to {self.path}; lower the learning rate"
        )


class WarnOnDivergence(Callback):
    """Warn once (a :class:`~xpnn.errors.DivergenceWarning`) when an epoch's mean training loss is
    more than ``factor`` times where the run started, the sign of a learning rate too high for the
    loss to turn NaN but too high to learn. Where the run started: the larger of the loss of this
    fit's first step and, for a resumed run, the first epoch's mean in the history."""

    def __init__(self, factor=2.0):
        if not factor > 1:
            raise ConfigError(f"WarnOnDivergence: expected factor > 1, got {factor}")
        self.factor = float(factor)
        self.warned = False

    def on_train_begin(self):
        self.warned = False

    def on_epoch_end(self, epoch, logs):
        t = self.trainer
        if self.warned or t.initial_loss is None or not math.isfinite(logs["loss"]):
            return
        start, where = t.initial_loss, "the first step"
        first_epoch = t.history["loss"][0] if t.start_epoch > 0 and t.history["loss"] else None
        if first_epoch is not None and first_epoch > start:
            start, where = first_epoch, "epoch 1's mean"
        if logs["loss"] > self.factor * start:
            self.warned = True
            warnings.warn(
                f"the training loss rose from {start:.4g} ({where}) to {logs['loss']:.4g} (epoch {epoch + 1}'s mean): "
                f"training is diverging; the learning rate ({logs['lr']:g}) is probably too high",
                DivergenceWarning,
                stacklevel=2,
            )


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.
    ``mode`` is "min", "max" or "auto" (max for names containing "acc", else min). With
    ``restore_best_weights`` the model gets back the weights of its best epoch when stopping."""

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto", restore_best_weights=False):
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"EarlyStopping: expected mode 'auto', 'min' or 'max', got {mode!r}")
        if mode == "auto":
            mode = "max" if "acc" in monitor else "min"
        self.monitor, self.patience, self.min_delta, self.mode = monitor, int(patience), abs(float(min_delta)), mode
        self.restore_best_weights = restore_best_weights
        self.best = None
        self.best_epoch = None
        self.wait = 0
        self.stopped_epoch = None
        self._best_state = None

    def on_train_begin(self):
        self.best, self.best_epoch, self.wait, self.stopped_epoch, self._best_state = None, None, 0, None, None

    def _improved(self, value):
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_epoch_end(self, epoch, logs):
        if self.monitor not in logs:
            raise ConfigError(f"EarlyStopping: monitor {self.monitor!r} is not among this epoch's values {sorted(logs)}; pass valid= to fit for val_* values")
        value = float(logs[self.monitor])
        if math.isfinite(value) and self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self._best_state = self.trainer.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True
            if self._best_state is not None:
                self.trainer.model.load_state_dict(self._best_state)

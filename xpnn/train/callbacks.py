"""Callbacks: hooks the Trainer calls around training and around each epoch (never per batch, so
they cost nothing inside the training step)."""

import math

from ..errors import ConfigError
from .checkpoint import save_checkpoint


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
    """Save a checkpoint to ``path`` at the end of every epoch (atomically, so an interrupted run
    keeps the previous one): model, optimizer, scheduler, the training DataLoader's shuffle state,
    the global random state, ``config`` and the history, for a bit-for-bit resume."""

    def __init__(self, path, config=None):
        self.path = path
        self.config = dict(config or {})
        self.last_saved = None

    def on_epoch_end(self, epoch, logs):
        t = self.trainer
        save_checkpoint(
            self.path, t.model, t.optimizer, t.scheduler, epoch=epoch + 1, config=self.config, history=t.history, loader=t.train_loader
        )
        self.last_saved = epoch + 1


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

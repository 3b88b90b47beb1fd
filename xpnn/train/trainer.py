"""Trainer: the training loop, evaluation and prediction.

Per step the loop does forward, loss, ``optimizer.zero_grad()``, ``model.backward_params(loss_fn.backward())``,
``optimizer.step()`` and keeps the step's loss and correct count as 0-d device arrays; nothing is read
back to the host inside a step. After the fit's first step (where the loss started, for
:class:`~xpnn.train.WarnOnDivergence`), every ``log_every`` steps and at the end of the epoch the
pending values are read back together (one device sync), checked for NaN/inf (naming the first bad step)
and added to the epoch's totals, and the progress bar advances.
"""

import sys
import time

import numpy as np

from .. import backend, nn, threads as xpnn_threads
from ..data.loader import DataLoader, _is_array, as_arrays
from ..errors import ArgumentTypeError, ConfigError, NonFiniteLossError
from ..nn.utils import clip_grad_norm_
from ..optim.lr_scheduler import ReduceLROnPlateau
from ..progress import progress_bar
from .checkpoint import restore as restore_checkpoint
from .history import History
from .metrics import METRICS


# A NumPy model with a convolution of at least this many channels in and out trains on xpnn's
# threads by default: its compiled loops (im2col, Winograd's transforms, pooling) are much of a
# step. Smaller networks (the seed CNN, LeNet) measured level or slower so (bench/threads.py).
WIDE_CONV_CHANNELS = 16


def default_threads(model):
    """The thread count ``Trainer`` trains ``model`` with when not told (``xpnn.threads``): the
    count set with ``xpnn.set_num_threads`` when above 1; else, for a NumPy model with a
    convolution of at least ``WIDE_CONV_CHANNELS`` channels in and out, as many threads as BLAS
    has; else 1 (BLAS's own threads serve Linear layers' mid-sized GEMMs and small convolutions
    better)."""
    if xpnn_threads.get_num_threads() > 1:
        return xpnn_threads.get_num_threads()
    wide = any(isinstance(m, (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d))
               and min(m.in_channels, m.out_channels) >= WIDE_CONV_CHANNELS for m in model.modules())
    return xpnn_threads.blas_threads() if wide and backend.is_numpy(getattr(model, "xp", None)) else 1


class Trainer:
    """Trains ``model`` with ``optimizer`` on ``loss_fn`` (default ``nn.CrossEntropyLoss()``).

    ``metrics``: names from ``xpnn.train.metrics.METRICS`` ("accuracy", recorded as ``acc``).
    ``scheduler``: a learning-rate schedule, stepped at the end of every epoch, or after every
    optimizer step with ``scheduler_interval="step"`` (then its horizon, e.g. ``T_max``, counts steps).
    A ``ReduceLROnPlateau`` is stepped at the end of every epoch with the epoch's ``val_loss`` when
    there is validation data, else with its training ``loss`` (it needs ``scheduler_interval="epoch"``).
    ``clip_grad_norm``: when a number, the gradients' total 2-norm is clipped to it
    (``nn.utils.clip_grad_norm_``) between the backward pass and the optimizer step; None: no clipping.
    ``log_every``: steps between reads of the running loss (NaN check, progress bar).
    ``verbose``: print one summary line per epoch on stdout.
    ``distributed``: data-parallel training over the ranks of an MPI job (``mpiexec -n N``): True or
    "auto" (MPI when launched by mpiexec, else one process), "mpi", "nccl", or a
    :class:`~xpnn.distributed.Communicator`. Each rank must build the same model, optimizer and
    loader with the same seed; :meth:`fit` checks that they agree, broadcasts rank 0's weights and
    optimizer state, trains each rank on its shard of every global batch with the gradients averaged
    (the steps equal a one-process run's with the same global batch, to summation order), reports
    global metrics, prints and runs ``rank_zero_only`` callbacks (checkpoints) on rank 0 alone, and
    ends every rank with one error naming the rank when one fails (``xpnn.distributed.data_parallel``).
    BatchNorm's batch statistics are per rank; its running statistics are rank 0's (broadcast before
    each evaluation). :meth:`evaluate` is collective then: every rank must call it.
    ``threads``: how many threads xpnn's NumPy operations split a step over during :meth:`fit`
    (``xpnn.threads``; NumPy's BLAS held to one meanwhile). None (default):
    :func:`default_threads`: the count set with ``xpnn.set_num_threads`` when above
    1; else, for a NumPy model with a convolution of at least 16 channels in and out, as many as
    BLAS has (its compiled loops then run on every core); else 1, BLAS's own threads, which serve
    Linear layers and small convolutions better.
    """

    def __init__(self, model, optimizer, loss_fn=None, metrics=("accuracy",), scheduler=None, scheduler_interval="epoch", log_every=50, verbose=True,
                 clip_grad_norm=None, distributed=None, threads=None):
        self.model = model
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ConfigError(f"Trainer: expected threads to be None or a whole number >= 1, got {threads!r}")
        self.threads = threads
        self.optimizer = optimizer
        self.loss_fn = nn.CrossEntropyLoss() if loss_fn is None else loss_fn
        reduction = getattr(self.loss_fn, "reduction", "mean")
        if reduction not in ("mean", "sum"):
            raise ConfigError(f"Trainer: expected a loss with reduction 'mean' or 'sum', got {reduction!r}")
        self._loss_weighted = reduction == "mean"
        metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
        unknown = [m for m in metrics if m not in METRICS]
        if unknown:
            raise ConfigError(f"Trainer: unknown metric {unknown[0]!r}; expected one of: {', '.join(METRICS)}")
        self._count = METRICS["accuracy"][1] if "accuracy" in metrics else None
        self.metrics = metrics
        self.scheduler = scheduler
        if scheduler_interval not in ("epoch", "step"):
            raise ConfigError(f"Trainer: expected scheduler_interval 'epoch' or 'step', got {scheduler_interval!r}")
        self.scheduler_interval = scheduler_interval
        if isinstance(scheduler, ReduceLROnPlateau) and scheduler_interval != "epoch":
            raise ConfigError("Trainer: a ReduceLROnPlateau steps on an epoch's loss; expected scheduler_interval 'epoch', got 'step'")
        ok = clip_grad_norm is None or (isinstance(clip_grad_norm, (int, float)) and not isinstance(clip_grad_norm, bool) and 0 < clip_grad_norm < float("inf"))
        if not ok:
            raise ConfigError(f"Trainer: expected clip_grad_norm to be None or a finite number > 0, got {clip_grad_norm!r}")
        self.clip_grad_norm = clip_grad_norm
        if int(log_every) < 1:
            raise ConfigError(f"Trainer: expected log_every >= 1, got {log_every}")
        self.log_every = int(log_every)
        self.verbose = verbose
        self.history = History()
        self.epoch = 0  # epochs completed
        self.stop_training = False
        self.train_loader = None
        self.initial_loss = None  # the loss of this fit's first step
        self.last_step_lr = None  # the learning rate of the latest optimizer step
        self.start_epoch = 0  # the epoch the latest fit started from
        self._dp = None
        if distributed not in (None, False):
            from ..distributed.comm import get_communicator
            from ..distributed.data_parallel import DataParallel

            comm = get_communicator(distributed)
            if comm.size > 1:
                self._dp = DataParallel(comm, model, optimizer)
        self.rank = 0 if self._dp is None else self._dp.rank

    # ---- training --------------------------------------------------------------------------

    def fit(self, train, epochs, valid=None, callbacks=(), start_epoch=0, progress=None, batch_size=None, shuffle=None):
        """Train from epoch ``start_epoch`` up to ``epochs`` (the total, as in Keras' initial_epoch:
        a run resumed from a checkpoint of epoch k passes ``start_epoch=k``) and evaluate ``valid``
        after each epoch. Returns the :class:`History` (also ``self.history``), whose entries from
        ``start_epoch`` on are replaced by this run's.

        ``train`` and ``valid`` are each a loader (a :class:`~xpnn.data.DataLoader` or any iterable of
        ``(x, y)`` batches), an ``(x, y)`` tuple of arrays, or a :class:`~xpnn.data.Dataset` from
        :func:`~xpnn.data.load_dataset`. Arrays are put on the model's device and dtype and batched
        by a DataLoader: ``batch_size`` (default 32) and ``shuffle`` (default True) for ``train``,
        batches of 256 in order for ``valid``; its shuffle is seeded from :mod:`xpnn.random`. With a
        loader, ``batch_size`` and ``shuffle`` belong to the loader and passing them is an error.
        (A bit-for-bit resume restores the training loader's shuffle state: pass a DataLoader.)

        ``progress``: a bar on stderr per epoch; None (default) draws one on a terminal or in a
        notebook, not into a file or a pipe.

        Example: ``trainer.fit((x, y), epochs=5, valid=(x_val, y_val), batch_size=64)``."""
        with xpnn_threads.parallel(self._thread_count()):
            if self._dp is None:
                return self._fit(train, epochs, valid, callbacks, start_epoch, progress, batch_size, shuffle)
            try:
                return self._fit(train, epochs, valid, callbacks, start_epoch, progress, batch_size, shuffle)
            except BaseException as exc:  # one rank alone cannot leave a collective: end the job
                self._dp.fail(exc)
                raise

    def _thread_count(self):
        return default_threads(self.model) if self.threads is None else self.threads

    def _fit(self, train, epochs, valid, callbacks, start_epoch, progress, batch_size, shuffle):
        epochs = _check_epochs(epochs, start_epoch)
        train_loader = self._as_loader(train, "Trainer.fit", batch_size, shuffle, default_batch=32, default_shuffle=True)
        if valid is not None:
            valid = self._as_loader(valid, "Trainer.fit valid", None, None, default_batch=256, default_shuffle=False)
        callbacks = list(callbacks)
        if hasattr(train_loader, "__len__") and len(train_loader) == 0:
            raise ConfigError("Trainer.fit: the training loader yields no batches (an empty dataset?); expected at least one")
        self.train_loader = train_loader
        dp = self._dp
        if dp is not None:
            from ..distributed.data_parallel import signature

            dp.check_consistent(signature(self.model, self.optimizer, train_loader, {"start_epoch": start_epoch, "epochs": epochs}))
            dp.broadcast_state()
            if self.rank != 0:
                callbacks = [cb for cb in callbacks if not getattr(cb, "rank_zero_only", False)]
                progress = False
        self.stop_training = False
        self.initial_loss = None
        self.start_epoch = start_epoch
        for key in self.history:
            del self.history[key][start_epoch:]
        for cb in callbacks:
            cb.set_trainer(self)
        for cb in callbacks:
            cb.on_train_begin()
        for epoch in range(start_epoch, epochs):
            for cb in callbacks:
                cb.on_epoch_begin(epoch)
            lr = self.optimizer.param_groups[0]["lr"]
            start = time.perf_counter()
            loss, acc = self._train_epoch(train_loader, epoch, epochs, progress)
            seconds = time.perf_counter() - start
            val = self.evaluate(valid) if valid is not None else {}
            record = dict(loss=loss, acc=acc, val_loss=val.get("loss"), val_acc=val.get("accuracy"), epoch_time=seconds, lr=lr)
            self.history.append(**record)
            self.epoch = epoch + 1
            if isinstance(self.scheduler, ReduceLROnPlateau):
                self.scheduler.step(loss if record["val_loss"] is None else record["val_loss"])
            elif self.scheduler is not None and self.scheduler_interval == "epoch":
                self.scheduler.step()
            logs = {key: value for key, value in record.items() if value is not None}
            if self.verbose and self.rank == 0:
                print(_summary(epoch, epochs, logs), file=sys.stdout, flush=True)
            for cb in callbacks:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in callbacks:
            cb.on_train_end(self.history)
        return self.history

    def _train_epoch(self, loader, epoch, epochs, progress):
        """One epoch of steps. Data-parallel, each step runs on this rank's shard of the global
        batch, and the gradients (with the step's loss and count) are averaged over the ranks
        before clipping and the update, so the tallied values are global."""
        model, dp = self.model, self._dp
        model.train()
        forward, backward = model.forward, model.backward_params
        loss_forward, loss_backward = self.loss_fn.forward, self.loss_fn.backward
        zero_grad, step = self.optimizer.zero_grad, self.optimizer.step
        first_group, weighted = self.optimizer.param_groups[0], self._loss_weighted
        count = self._count
        schedule = self.scheduler.step if self.scheduler is not None and self.scheduler_interval == "step" else None
        max_norm = self.clip_grad_norm
        params = dp.params if dp is not None else list(model.parameters())
        tally = _Tally(weighted, count is not None)
        losses, correct, sizes, rates = tally.losses, tally.correct, tally.sizes, tally.rates
        every = self.log_every
        flush_at = 1 if self.initial_loss is None else every  # the fit's first step is read at once: where the loss started
        total = len(loader) if hasattr(loader, "__len__") else None
        batches = dp.shard(loader) if dp is not None else ((xb, yb, xb.shape[0]) for xb, yb in loader)
        bar = progress_bar(progress, total=total, desc=f"epoch {epoch + 1}/{epochs}", unit="batch", leave=False, dynamic_ncols=True, mininterval=0)
        try:
            for xb, yb, n in batches:
                zero_grad()
                loss = hits = None
                if dp is None or xb.shape[0]:  # a rank's shard of a short last batch may be empty
                    logits = forward(xb)
                    loss = loss_forward(logits, yb)
                    backward(loss_backward())
                    if count is not None:
                        hits = count(logits, yb)
                if dp is not None:
                    loss, hits = dp.reduce_step(xb.shape[0], n, loss, hits, weighted)
                if max_norm is not None:
                    clip_grad_norm_(params, max_norm)
                rates.append(first_group["lr"])
                step()
                if schedule is not None:
                    schedule()
                losses.append(loss)
                sizes.append(n)
                if count is not None:
                    correct.append(hits)
                if len(losses) == flush_at:
                    self._read_back(tally, bar, epoch, total)
                    flush_at = every
            self._read_back(tally, bar, epoch, total)
            backend.synchronize(model.xp)
        finally:
            bar.close()
        if not tally.samples:
            raise ConfigError(f"Trainer.fit: the training loader yielded no samples in epoch {epoch + 1}; expected at least one batch")
        self.last_step_lr = tally.last_lr
        return tally.mean_loss(), tally.accuracy()

    def _read_back(self, tally, bar, epoch, total):
        """One device sync: fetch the pending per-step values, stop on a non-finite loss, advance the bar."""
        pending = len(tally.losses)
        bad = tally.flush()
        if bad is not None:
            step, value, lr = bad
            of = f" of {total}" if total else ""
            raise NonFiniteLossError(
                f"non-finite loss ({value}) at epoch {epoch + 1}, step {step + 1}{of}, learning rate {lr:g} at that step: "
                "training diverged; lower the learning rate or check the inputs for NaN/inf"
            )
        if self.initial_loss is None and tally.samples:
            self.initial_loss = tally.mean_loss()
        if not bar.disable and pending:
            acc = tally.accuracy()
            postfix = f"loss {tally.mean_loss():.4f}" + (f", acc {acc:.2%}" if acc is not None else "")
            bar.set_postfix_str(postfix, refresh=False)
            bar.update(pending)

    # ---- evaluation and prediction ---------------------------------------------------------

    @nn.no_grad()
    def evaluate(self, data, batch_size=None):
        """Mean loss and accuracy over ``data`` in eval mode: ``{"loss": ..., "accuracy": ...}``
        (Python floats; "accuracy" only with that metric). A non-finite loss is reported, not raised.
        ``data`` is a loader, an ``(x, y)`` tuple of arrays or a Dataset, as in :meth:`fit`; arrays
        go in batches of ``batch_size`` (default 256)."""
        loader = self._as_loader(data, "Trainer.evaluate", batch_size, None, default_batch=256, default_shuffle=False)
        model = self.model
        was_training = model.training
        model.eval()
        forward, loss_forward, count = model.forward, self.loss_fn.forward, self._count
        tally = _Tally(self._loss_weighted, count is not None)
        losses, correct, sizes = tally.losses, tally.correct, tally.sizes
        dp = self._dp
        if dp is not None:  # each rank evaluates its shard of every batch of rank 0's model
            dp.broadcast_buffers()
            loader = ((xb, yb) for xb, yb, _ in dp.shard(loader) if xb.shape[0])
        try:
            for xb, yb in loader:
                logits = forward(xb)
                losses.append(loss_forward(logits, yb))
                sizes.append(xb.shape[0])
                if count is not None:
                    correct.append(count(logits, yb))
                if len(losses) == self.log_every:
                    tally.flush()
            tally.flush()
        finally:
            model.train(was_training)
        if dp is not None:
            loss_sum, correct_sum, samples = dp.reduce_totals(tally.loss_sum, tally.correct_sum, tally.samples)
            tally.loss_sum, tally.correct_sum, tally.samples = loss_sum, int(round(correct_sum)), int(round(samples))
        if not tally.samples:
            raise ConfigError("Trainer.evaluate: the loader yielded no samples (an empty dataset?); expected at least one batch")
        result = {"loss": tally.mean_loss()}
        if count is not None:
            result["accuracy"] = tally.accuracy()
        return result

    def _as_loader(self, data, where, batch_size, shuffle, default_batch, default_shuffle):
        """``data`` itself when it is a loader (any iterable of batches), else a DataLoader over its
        arrays on the model's device and dtype; the forms and their errors are DataLoader's."""
        if not _is_data(data):
            if isinstance(data, list) and data and all(_is_array(item) for item in data):
                raise ArgumentTypeError(f"{where}: expected a loader, an (x, y) tuple or a Dataset, found a list of {len(data)} arrays; pass a tuple (x, y)")
            given = [f"{name}={value!r}" for name, value in (("batch_size", batch_size), ("shuffle", shuffle)) if value is not None]
            if given:
                raise ConfigError(
                    f"{where}: {' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} only to arrays; found a loader ({type(data).__name__}), which batches by itself: set them on the loader"
                )
            return data
        x, y = as_arrays(data, None, where)
        model = self.model
        dtype = next(iter(model.parameters())).dtype if model.num_parameters() else None
        x = backend.asarray(x, model.xp, dtype, model.device)
        y = backend.asarray(y, model.xp, None, model.device)
        return DataLoader(x, y, default_batch if batch_size is None else batch_size, default_shuffle if shuffle is None else shuffle)

    @nn.no_grad()
    def predict(self, data, batch_size=256, logits=False):
        """Class indices (or, with ``logits``, the raw outputs) for ``data``: an array of inputs
        (host or device; fed in batches of ``batch_size``) or a loader yielding ``x`` or ``(x, y)``.
        Returns a device array on the model's device; an empty input gives an empty output."""
        model = self.model
        xp = model.xp
        if hasattr(data, "shape"):
            if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
                raise ConfigError(f"Trainer.predict: expected batch_size a positive integer, got {batch_size!r}")
            dtype = next(iter(model.parameters())).dtype if model.num_parameters() else None
            n = data.shape[0]
            starts = range(0, n, batch_size) if n else (0,)  # an empty input goes through once, as an empty batch
            batches = (backend.asarray(data[a:a + batch_size, ...], xp, dtype, model.device) for a in starts)
        else:
            batches = (b[0] if isinstance(b, (tuple, list)) else b for b in data)
        was_training = model.training
        model.eval()
        try:
            outputs = [model.forward(xb) for xb in batches]
        finally:
            model.train(was_training)
        if not outputs:
            raise ConfigError("Trainer.predict: the loader yielded no batches; expected at least one")
        out = xp.concat(outputs, axis=0)
        return out if logits else xp.argmax(out, axis=1)

    # ---- checkpoints -----------------------------------------------------------------------

    def restore(self, checkpoint, loader=None, rng=True):
        """Load a checkpoint (path or :class:`~xpnn.train.Checkpoint`) into the model, optimizer,
        scheduler, ``loader`` and global random state, and take over its history. Returns the epoch
        to continue from: ``trainer.fit(loader, epochs, start_epoch=trainer.restore(path, loader))``."""
        ckpt = restore_checkpoint(checkpoint, self.model, self.optimizer, self.scheduler, loader, rng)
        self.history = History(ckpt.history)
        self.epoch = ckpt.epoch
        return ckpt.epoch


def _is_data(value):
    """True for the forms that hold arrays rather than batches: a tuple, an array, a Dataset (or any
    object with ``.arrays()``), and what is no loader at all (a string, a dict, None, a number)."""
    if isinstance(value, (tuple, str, bytes, dict)) or value is None or _is_array(value) or hasattr(value, "arrays"):
        return True
    return not hasattr(value, "__iter__")


def _check_epochs(epochs, start_epoch):
    """``epochs`` as an int, or a ConfigError; an array there is the Keras habit fit(x, y, ...)."""
    if _is_array(epochs):
        raise ArgumentTypeError(
            f"Trainer.fit: expected epochs, a positive int, found an array of shape {tuple(epochs.shape)}; "
            "pass the arrays as one tuple: fit((x, y), epochs=...)"
        )
    if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 0:
        raise ConfigError(f"Trainer.fit: expected epochs, a non-negative int (the total, counting start_epoch={start_epoch}), found {epochs!r}")
    return int(epochs)


def _summary(epoch, epochs, logs):
    """'epoch  3/10  loss 0.0523  acc 98.41%  val_loss 0.0712  val_acc 97.85%  2.1s  lr 0.001'"""
    parts = [f"epoch {epoch + 1:>{len(str(epochs))}}/{epochs}", f"loss {logs['loss']:.4f}"]
    if "acc" in logs:
        parts.append(f"acc {logs['acc']:.2%}")
    if "val_loss" in logs:
        parts.append(f"val_loss {logs['val_loss']:.4f}")
    if "val_acc" in logs:
        parts.append(f"val_acc {logs['val_acc']:.2%}")
    parts.append(f"{logs['epoch_time']:.1f}s")
    parts.append(f"lr {logs['lr']:.3g}")
    return "  ".join(parts)


class _Tally:
    """Per-step values waiting on the device, and the host totals they are folded into."""

    __slots__ = ("weighted", "counts", "losses", "correct", "sizes", "rates", "loss_sum", "correct_sum", "samples", "steps", "last_lr")

    def __init__(self, weighted, counts):
        self.weighted, self.counts = weighted, counts
        self.losses, self.correct, self.sizes, self.rates = [], [], [], []
        self.loss_sum, self.correct_sum, self.samples, self.steps = 0.0, 0, 0, 0
        self.last_lr = None

    def flush(self):
        """Read the pending values back (one sync) and add them up; returns (step, value, learning
        rate of that step or None) of the first non-finite loss among them, or None."""
        if not self.losses:
            return None
        xp = backend.namespace_of(self.losses[0])
        values = backend.to_numpy(xp.stack(self.losses)).astype(np.float64)
        sizes = np.asarray(self.sizes, dtype=np.float64)
        bad = None
        finite = np.isfinite(values)
        if not finite.all():
            first = int(np.argmin(finite))
            bad = (self.steps + first, float(values[first]), self.rates[first] if self.rates else None)
        self.loss_sum += float(values @ sizes) if self.weighted else float(values.sum())
        if self.correct:
            self.correct_sum += int(backend.to_numpy(xp.stack(self.correct)).sum())
        self.samples += int(sizes.sum())
        self.steps += len(self.losses)
        if self.rates:
            self.last_lr = self.rates[-1]
        self.losses.clear()
        self.correct.clear()
        self.sizes.clear()
        self.rates.clear()
        return bad

    def mean_loss(self):
        return self.loss_sum / self.samples if self.samples else float("nan")

    def accuracy(self):
        return self.correct_sum / self.samples if self.counts and self.samples else None

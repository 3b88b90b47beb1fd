"""The ``xpnn`` command: ``xpnn train``, ``xpnn eval`` and ``xpnn info``.

Every mistake a user can make (a bad option, a missing or corrupt file, ``--device cuda`` without
CuPy or a GPU, a checkpoint that does not fit, a run folder that holds another run, a diverging
run) ends with one line on stderr, ``xpnn: error: ...``, and exit status 2; Ctrl-C exits with 130
and SIGTERM with 143, each saying which checkpoint is intact; a closed stdout (``| head``) ends the
command quietly. Warnings are one line each, ``xpnn: warning: ...``.
"""

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import math
import os
import platform
import signal
import sys
import threading
import warnings
from pathlib import Path

import numpy as np

from . import __version__, backend, optim
from .data.registry import DATASETS
from .errors import CheckpointError, ConfigError, MissingDataError, NonFiniteLossError, XpnnError
from .models import MODELS, build_model


def _cosine(optimizer, epochs, steps_per_epoch):
    """Cosine decay of the learning rate to zero over the run."""
    return optim.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)


def _step(optimizer, epochs, steps_per_epoch):
    """The learning rate x0.1 after each third of the epochs."""
    return optim.StepLR(optimizer, step_size=max(1, epochs // 3) * steps_per_epoch, gamma=0.1)


def _onecycle(optimizer, epochs, steps_per_epoch):
    """One cycle: the learning rate rises from lr/25 to lr over the first 30% of the steps, then
    anneals to lr/250000; the momentum (or Adam's beta1) cycles between 0.95 and 0.85."""
    return optim.OneCycleLR(optimizer, max_lr=optimizer.param_groups[0]["lr"], total_steps=epochs * steps_per_epoch)


def _exponential(optimizer, epochs, steps_per_epoch):
    """Exponential decay of the learning rate to 1/100 of its start over the run."""
    return optim.ExponentialLR(optimizer, gamma=0.01 ** (1 / (epochs * steps_per_epoch)))


def _warmup_cosine(optimizer, epochs, steps_per_epoch):
    """A linear warm-up from lr/10 over the first epoch (at most a tenth of the run), then cosine
    decay to zero over the rest: the usual recipe for residual networks at lr 0.1."""
    total = epochs * steps_per_epoch
    warm = max(1, min(steps_per_epoch, total // 10))
    warm_up = optim.LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=warm)
    return optim.SequentialLR(optimizer, [warm_up, optim.CosineAnnealingLR(optimizer, T_max=max(1, total - warm))], milestones=[warm])


def _constant(optimizer, epochs, steps_per_epoch):
    """No scheduler: the learning rate stays as given."""
    return None


OPTIMIZERS = {
    "sgd": lambda params, lr: optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
    "adam": lambda params, lr: optim.Adam(params, lr=lr),
    "adamw": lambda params, lr: optim.AdamW(params, lr=lr),
}
SCHEDULES = {
    "cosine": _cosine, "step": _step, "none": _constant, "onecycle": _onecycle, "exponential": _exponential, "warmup-cosine": _warmup_cosine,
}
DEFAULTS = {"dataset": "mnist", "model": "mlp", "optimizer": "adam", "seed": 0, "schedule": "cosine"}
# Settings added after the first checkpoints were written: their defaults, which are also what an
# older checkpoint's run used. weight_decay None leaves each optimizer's own default.
LATER_DEFAULTS = {"weight_decay": None, "label_smoothing": 0.0, "augment": None}
# The residual networks' recipe (He et al. 2016, with the usual warm-up): SGD with Nesterov
# momentum 0.9, lr 0.1 warmed up over the first epoch then cosine-decayed, batch 128, weight
# decay 5e-4 on conv/linear weights only.
RESNET_RECIPE = {"batch_size": 128, "lr": 0.1, "optimizer": "sgd", "schedule": "warmup-cosine", "weight_decay": 5e-4}
MODEL_DEFAULTS = {  # one per name in models.MODELS; they reach >= 98% (mlp, 10 epochs) and >= 99% (lenet, 3 epochs) MNIST test accuracy
    "mlp": {"epochs": 10, "batch_size": 64, "lr": 1e-3},
    "cnn": {"epochs": 5, "batch_size": 64, "lr": 1e-3},
    "lenet": {"epochs": 5, "batch_size": 32, "lr": 2e-3},
    "resnet8": {"epochs": 2, **RESNET_RECIPE},  # the small grey residual network, for 28x28 images
    "resnet20": {"epochs": 30, **RESNET_RECIPE},
    "resnet32": {"epochs": 30, **RESNET_RECIPE},
    "resnet56": {"epochs": 30, **RESNET_RECIPE},
}
SETTINGS = (*DEFAULTS, "epochs", "batch_size", "lr")
ALL_SETTINGS = (*SETTINGS, *LATER_DEFAULTS)
EVAL_BATCH = 1000
EXIT_ERROR, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_BROKEN_PIPE = 2, 130, 143, 141


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that a run stops the same clean way (writes finish or roll
    back, the intact checkpoint is named) but exits with 143."""


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit status 2), not the usage block."""

    def error(self, message):
        print(f"xpnn: error: {message} (see '{self.prog} --help')", file=sys.stderr)
        raise SystemExit(2)


def _int_at_least(minimum, what):
    """An argparse type accepting integers >= ``minimum``, described as ``what`` in its error."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
_non_negative_int = _int_at_least(0, "an integer >= 0")


def _positive_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def _non_negative_float(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def _fraction(text):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _per_model(key):
    return ", ".join(f"{model} {defaults[key]:g}" for model, defaults in MODEL_DEFAULTS.items())


def build_parser():
    parser = _Parser(prog="xpnn", description="Train and evaluate small neural networks on NumPy (CPU) or CuPy (CUDA).")
    parser.add_argument("--version", action="version", version=f"xpnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,info}")

    train = commands.add_parser(
        "train",
        help="train a model; the test split is used as validation",
        description="Train a model and write model.npz (checkpoint, every epoch), history.json and curves.png "
        "into --out. The test split is evaluated after every epoch as the validation set. "
        "Defaults: adam with a cosine learning-rate decay to zero over the run (stepped every batch); "
        "for the resnets, SGD with Nesterov momentum, lr 0.1 warmed up over the first epoch then cosine-decayed, batch 128 "
        "and weight decay 5e-4 on conv/linear weights; batch size, learning rate and epochs per model as listed below.",
    )
    train.add_argument("--dataset", choices=tuple(DATASETS), help=f"dataset (default {DEFAULTS['dataset']})")
    train.add_argument("--model", choices=tuple(MODELS), help=f"model (default {DEFAULTS['model']})")
    train.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    train.add_argument("--epochs", type=_positive_int, help=f"total epochs (default {_per_model('epochs')}; on --resume, the checkpoint's)")
    train.add_argument("--batch-size", type=_positive_int, help=f"training batch size (default {_per_model('batch_size')})")
    train.add_argument("--optimizer", choices=tuple(OPTIMIZERS), help=f"optimizer (default {DEFAULTS['optimizer']}, sgd for the resnets; sgd uses Nesterov momentum 0.9)")
    train.add_argument("--lr", type=_positive_float, help=f"initial learning rate (default {_per_model('lr')})")
    train.add_argument("--schedule", choices=tuple(SCHEDULES), help=f"learning-rate schedule over the epochs, stepped every batch (default {DEFAULTS['schedule']}, warmup-cosine for the resnets)")
    train.add_argument(
        "--clip-grad-norm", type=_positive_float, metavar="X",
        help="clip the gradients' total 2-norm to X before each step (default: no clipping; on --resume, the checkpoint's)",
    )
    train.add_argument(
        "--weight-decay", type=_non_negative_float, metavar="WD",
        help="weight decay on the weights of convolutions and linear layers, not on biases and normalisation parameters "
        "(default: the optimizer's own, or 5e-4 for the resnets)",
    )
    train.add_argument("--label-smoothing", type=_fraction, metavar="S", help="label smoothing of the cross-entropy, in [0, 1) (default 0)")
    train.add_argument(
        "--augment", action=argparse.BooleanOptionalAction, default=None,
        help="random crops (4-pixel zero padding) and horizontal flips of the training images, on the device "
        "(default: on for cifar10 and cifar100, which define them; off elsewhere)",
    )
    train.add_argument("--seed", type=_non_negative_int, help="seed of weights, shuffling and dropout (default 0)")
    train.add_argument("--data-dir", help="directory holding (or receiving) the dataset files (default: on --resume, the run's if it still exists; else $XPNN_DATA_DIR or ~/.cache/xpnn)")
    train.add_argument(
        "--out",
        help="output directory (default runs/<dataset>-<model>, or runs/<dataset>-<model>-2, ... when that one holds a run; "
        "on --resume, the checkpoint's directory). A folder holding another run's checkpoint is refused unless --overwrite",
    )
    train.add_argument("--overwrite", action="store_true", help="let this run replace the checkpoint, history and curves already in --out")
    train.add_argument("--resume", metavar="CHECKPOINT", help="continue the run saved in CHECKPOINT (a model.npz) up to --epochs")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (the per-epoch lines stay); there is none when stderr is not a terminal")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser(
        "eval", help="evaluate a checkpoint on its dataset's test split", description="Evaluate CHECKPOINT on the test split of the dataset it was trained on."
    )
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="a model.npz written by xpnn train")
    evaluate.add_argument("--data-dir", help="directory holding the dataset files (default: the one the run was trained with, if it still exists)")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object (loss, accuracy, confusion_matrix) instead of text")
    evaluate.set_defaults(func=_eval)

    info = commands.add_parser("info", help="versions, backends and devices", description="Print versions, backends and devices.")
    info.set_defaults(func=_info)
    return parser


def main(argv=None):
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help / --version (0) or a usage error, already printed on one line
        return exc.code if isinstance(exc.code, int) else 2
    previous = _stop_on_sigterm()
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            status = args.func(args) or 0
        sys.stdout.flush()
        return status
    except BrokenPipeError:
        return _stdout_gone()
    except KeyboardInterrupt as exc:
        what, status = ("terminated", EXIT_TERMINATED) if isinstance(exc, Terminated) else ("interrupted", EXIT_INTERRUPTED)
        print(f"xpnn: {what}" + (f"; {exc}" if str(exc) else ""), file=sys.stderr)
        return status
    except XpnnError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _fail(message):
    print("xpnn: error: " + _one_line(message), file=sys.stderr)
    return EXIT_ERROR


def _one_line(text):
    return " ".join(str(text).split())


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """Print a warning as one line, ``xpnn: warning: ...``, without the source location."""
    print("xpnn: warning: " + _one_line(message), file=sys.stderr)


def _raise_terminated(signum, frame):
    raise Terminated()


def _stop_on_sigterm():
    """Turn SIGTERM into :class:`Terminated` while the command runs; returns the handler to put
    back (None where signals cannot be caught: not the main thread, no SIGTERM)."""
    if not hasattr(signal, "SIGTERM") or threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


def _stdout_gone():
    """stdout was closed by its reader (``xpnn eval ... | head``): stop without a message, and
    point stdout at the null device so that the interpreter's final flush does not complain."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    return EXIT_BROKEN_PIPE


# ---- train -----------------------------------------------------------------------------------

MAX_EPOCHS, MAX_BATCH, MAX_CLASSES, MAX_SIDE, MAX_PIXELS, MAX_SEED, MAX_PATH = 10**6, 2**20, 10**5, 2**15, 2**26, 2**64 - 1, 4096


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_in(low, high):
    def check(value):
        return _is_int(value) and low <= value <= high

    return check, f"an integer from {low} to {high}"


def _image_shape_ok(value):
    return (
        isinstance(value, list)
        and len(value) == 3
        and all(_is_int(side) and 1 <= side <= MAX_SIDE for side in value)
        and math.prod(value) <= MAX_PIXELS
    )


def _run_config_schema():
    """What each value of a checkpoint's run config must be: (check, description)."""
    return {
        "model": (lambda v: v in MODELS, f"one of {', '.join(MODELS)}"),
        "dataset": (lambda v: v in DATASETS, f"one of {', '.join(DATASETS)}"),
        "optimizer": (lambda v: v in OPTIMIZERS, f"one of {', '.join(OPTIMIZERS)}"),
        "schedule": (lambda v: v in SCHEDULES, f"one of {', '.join(SCHEDULES)}"),
        "epochs": _int_in(1, MAX_EPOCHS),
        "batch_size": _int_in(1, MAX_BATCH),
        "seed": _int_in(0, MAX_SEED),
        "lr": (lambda v: _is_number(v) and math.isfinite(v) and v > 0, "a finite number > 0"),
        "image_shape": (_image_shape_ok, f"[channels, height, width] of positive integers, at most {MAX_PIXELS} values in all"),
        "num_classes": _int_in(1, MAX_CLASSES),
        "classes": (lambda v: isinstance(v, list) and all(isinstance(c, str) for c in v), "a list of class names"),
        "data_dir": (lambda v: v is None or (isinstance(v, str) and 0 < len(v) <= MAX_PATH), f"a folder path of at most {MAX_PATH} characters, or null"),
        "weight_decay": (lambda v: v is None or (_is_number(v) and math.isfinite(v) and v >= 0), "a finite number >= 0, or null"),
        "label_smoothing": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
        "augment": (lambda v: isinstance(v, bool), "true or false"),
        "clip_grad_norm": (
            lambda v: v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0), "a finite number > 0, or null"
        ),
    }


def _check_run_config(checkpoint, required):
    """The checkpoint's run config is untrusted input: every key in ``required`` must be present,
    and every known key must hold a value of its schema, before any of it is used."""
    config = checkpoint.config
    if not isinstance(config, dict):
        raise CheckpointError(f"checkpoint {checkpoint.path}: its run config is a {type(config).__name__}, expected a JSON object")
    missing = [key for key in required if key not in config]
    if missing:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} was not written by 'xpnn train' (its config lacks {', '.join(missing)}); it cannot be used here"
        )
    for key, (check, expected) in _run_config_schema().items():
        if key in config and not _valid(check, config[key]):
            raise CheckpointError(f"checkpoint {checkpoint.path} is corrupt: its config {key} is {_shown(config[key])}, expected {expected}")
    classes = config.get("classes")
    if classes is not None and len(classes) != config["num_classes"]:
        raise CheckpointError(f"checkpoint {checkpoint.path} is corrupt: its config names {len(classes)} classes, expected num_classes = {config['num_classes']}")


def _valid(check, value):
    try:
        return bool(check(value))
    except TypeError:  # an unhashable value tested for membership
        return False


def _shown(value, limit=60):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _settings(args, checkpoint):
    """The run's settings: the options given, else the checkpoint's (on --resume), else the model's
    recipe (MODEL_DEFAULTS), else DEFAULTS. ``augment`` left open becomes the dataset's default."""
    given = {key: getattr(args, key) for key in ALL_SETTINGS}
    if checkpoint is None:
        model = given["model"] or DEFAULTS["model"]
        settings = {**DEFAULTS, **LATER_DEFAULTS, **MODEL_DEFAULTS[model]}
        settings.update({key: value for key, value in given.items() if value is not None})
    else:
        config = checkpoint.config
        saved = {key: config.get(key, LATER_DEFAULTS.get(key)) for key in ALL_SETTINGS}
        if "augment" not in config:  # runs from before augmentation trained without it
            saved["augment"] = False
        for key, value in given.items():
            if key != "epochs" and value is not None and value != saved[key]:
                option = _flag(key, value).split()[0]
                raise ConfigError(f"{_flag(key, value)} conflicts with checkpoint {checkpoint.path}, trained with {_flag(key, saved[key])}; drop {option} to resume it")
        settings = dict(saved, epochs=args.epochs or config["epochs"])
        if checkpoint.epoch >= settings["epochs"]:
            raise ConfigError(
                f"checkpoint {checkpoint.path} has already completed {_plural(checkpoint.epoch, 'epoch')}; pass --epochs N with N > {checkpoint.epoch} to train further"
            )
    if settings["augment"] is None:
        settings["augment"] = DATASETS[settings["dataset"]].augment
    return settings


def _flag(key, value):
    """How the command line spells setting ``key`` = ``value``."""
    if key == "augment":
        return "--augment" if value else "--no-augment"
    return f"--{key.replace('_', '-')} {value}"


def _load_run_checkpoint(path, required):
    from .train import load_checkpoint

    if not path.strip():
        raise ConfigError(f"expected a checkpoint path, got {path!r} (an unset shell variable?)")
    checkpoint = load_checkpoint(path)
    _check_run_config(checkpoint, required)
    return checkpoint


def _run_folder(args, settings, checkpoint):
    """Where this run writes, checked (not yet created): --out, else the resumed checkpoint's
    folder, else the first free runs/<dataset>-<model>[-N]. A folder holding another run's
    checkpoint is refused unless --overwrite."""
    from .train import RunFolder

    if args.out is not None and not args.out.strip():
        raise ConfigError(f"--out expects a folder, got {args.out!r} (an unset shell variable?)")
    if args.out:
        folder = RunFolder(args.out)
    elif checkpoint is not None:
        folder = RunFolder(checkpoint.path.parent)
    else:
        folder = RunFolder.fresh(Path("runs") / f"{settings['dataset']}-{settings['model']}")
    if not args.overwrite:
        if checkpoint is not None and folder.holds_other_checkpoint(checkpoint.path):
            raise ConfigError(
                f"run folder {folder.path} holds another run's checkpoint ({folder.checkpoint}); resuming {checkpoint.path} there would "
                f"replace it: pass --out with a folder of its own, or --overwrite"
            )
        if checkpoint is None and folder.holds_checkpoint():
            raise ConfigError(
                f"run folder {folder.path} already holds a checkpoint ({folder.checkpoint}); pass --resume {folder.checkpoint} to continue "
                "that run, another --out for a new one, or --overwrite to replace it"
            )
    folder.check()
    return folder


def _model_for(name, image_shape, classes, dataset, xp):
    try:
        return build_model(name, image_shape, len(classes), device=xp)
    except ConfigError as exc:
        shape = "x".join(map(str, image_shape))
        raise ConfigError(f"dataset {dataset} ({shape} images, {len(classes)} classes) cannot train model {name}: {exc}") from exc


def _refuse_non_finite(checkpoint, model, optimizer=None):
    """A checkpoint holding NaN or infinity (a diverged run saved by an older xpnn, or edited) is
    neither evaluated nor resumed."""
    from .train.finite import non_finite_state

    problem = non_finite_state(model, optimizer)
    if problem is not None:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} holds a NaN or infinite {problem}: the run it saved had diverged; "
            "use an earlier checkpoint or start a new run with a lower learning rate"
        )


def _replan(scheduler, planned, epochs, steps_per_epoch):
    """A resumed run whose total of epochs differs from the plan: the cosine, warm-up + cosine and
    one-cycle schedules are re-spread over the new total (from where the run is, so the rate moves once and then decays smoothly to
    zero at the new end); the others continue as they were. Returns the sentence that says so."""
    lr = scheduler.optimizer.param_groups[0]["lr"] if scheduler is not None else None
    if isinstance(scheduler, optim.CosineAnnealingLR):
        scheduler.T_max = epochs * steps_per_epoch
        for group, rate in zip(scheduler.optimizer.param_groups, scheduler.get_lr()):
            group["lr"] = rate
        new = scheduler.optimizer.param_groups[0]["lr"]
        return f"the cosine schedule now decays to 0 over {_plural(epochs, 'epoch')} (planned: {planned}); the learning rate goes from {lr:g} to {new:g}"
    if isinstance(scheduler, optim.SequentialLR) and isinstance(scheduler.schedulers[-1], optim.CosineAnnealingLR):
        cosine, start = scheduler.schedulers[-1], scheduler.milestones[-1]
        cosine.T_max = max(1, epochs * steps_per_epoch - start)
        if scheduler.last_epoch >= start:
            for group, rate in zip(scheduler.optimizer.param_groups, cosine.get_lr()):
                group["lr"] = rate
        new = scheduler.optimizer.param_groups[0]["lr"]
        return f"the warm-up + cosine schedule now decays to 0 over {_plural(epochs, 'epoch')} (planned: {planned}); the learning rate goes from {lr:g} to {new:g}"
    if isinstance(scheduler, optim.OneCycleLR):
        scheduler.total_steps = epochs * steps_per_epoch
        for group, rate in zip(scheduler.optimizer.param_groups, scheduler.get_lr()):
            group["lr"] = rate
        new = scheduler.optimizer.param_groups[0]["lr"]
        return f"the one-cycle schedule now spans {_plural(epochs, 'epoch')} (planned: {planned}); the learning rate goes from {lr:g} to {new:g}"
    if isinstance(scheduler, optim.ExponentialLR):
        return f"the exponential schedule continues as planned for {planned} epochs: the learning rate (now {lr:g}) x{scheduler.gamma:.6g} every step"
    if isinstance(scheduler, optim.StepLR):
        every = scheduler.step_size // steps_per_epoch
        return f"the step schedule continues as planned for {planned} epochs: the learning rate (now {lr:g}) x{scheduler.gamma:g} every {_plural(every, 'epoch')}"
    return f"training to epoch {epochs} (planned: {planned}) at a constant learning rate ({lr:g})"


def _augmentation(dataset, augment):
    """The dataset's training transforms when ``augment``, else None."""
    from .data.transforms import default_transforms

    if not augment:
        return None
    transform = default_transforms(dataset)
    if transform is None:
        with_augmentation = ", ".join(name for name, info in DATASETS.items() if info.augment)
        raise ConfigError(f"--augment: no augmentation is defined for {dataset} (only for {with_augmentation}); drop --augment")
    return transform


def _remembered_data_dir(checkpoint):
    """The data folder the checkpoint's run was trained with (its --data-dir), if it still exists."""
    folder = checkpoint.config.get("data_dir") if checkpoint is not None else None
    return folder if folder and Path(folder).is_dir() else None


def _kept(saver, checkpoint):
    """Which checkpoint survives a run stopped early, as the end of a sentence."""
    if saver.last_saved is not None:
        return f"the last checkpoint, {saver.path} (epoch {saver.last_saved}), is intact"
    if checkpoint is not None:
        return f"no epoch completed; {checkpoint.path} (epoch {checkpoint.epoch}) is unchanged"
    return "no epoch completed, so no checkpoint was written"


def _chance_level(accuracy, labels):
    """Whether ``accuracy`` on ``labels`` is within noise of always answering the most frequent
    class (three standard errors of that rate, plus a point)."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64))
    majority = counts.max() / counts.sum()
    margin = 3 * math.sqrt(majority * (1 - majority) / counts.sum()) + 0.01
    return accuracy <= majority + margin, majority


def _train(args):
    from . import nn
    from . import random as xpnn_random
    from .data import DataLoader, load_dataset
    from .optim import weight_decay_groups
    from .train import Trainer

    checkpoint = _load_run_checkpoint(args.resume, SETTINGS) if args.resume is not None else None
    s = _settings(args, checkpoint)
    xp = backend.resolve(args.device)  # fails fast on --device cuda without CuPy or a GPU
    folder = _run_folder(args, s, checkpoint)
    data_dir = args.data_dir or _remembered_data_dir(checkpoint)
    try:
        train_set = load_dataset(s["dataset"], train=True, root=data_dir)
        test_set = load_dataset(s["dataset"], train=False, root=data_dir)
    except MissingDataError as exc:
        raise MissingDataError(f"{exc}; or use --dataset digits, which ships with xpnn and needs no download") from None
    transform = _augmentation(train_set.name, s["augment"])
    x, y = train_set.arrays(normalize=transform is None)  # an augmentation pipeline ends by normalising on the device
    x_test, y_test = test_set.arrays()
    image_shape = tuple(x.shape[1:])
    classes = list(train_set.classes)

    xpnn_random.manual_seed(s["seed"])
    model = _model_for(s["model"], image_shape, classes, train_set.name, xp)
    optimizer = OPTIMIZERS[s["optimizer"]](weight_decay_groups(model, s["weight_decay"]), s["lr"])
    train_loader = DataLoader(x, y, batch_size=s["batch_size"], shuffle=True, seed=s["seed"], device=xp, transform=transform)
    scheduler = SCHEDULES[s["schedule"]](optimizer, s["epochs"], len(train_loader))
    test_loader = DataLoader(x_test, y_test, batch_size=EVAL_BATCH, device=xp)
    config = dict(s, dataset=train_set.name, image_shape=list(image_shape), num_classes=len(classes), classes=classes)
    config["data_dir"] = str(Path(data_dir).resolve()) if data_dir else None
    config["clip_grad_norm"] = args.clip_grad_norm if args.clip_grad_norm is not None or checkpoint is None else checkpoint.config.get("clip_grad_norm")

    loss_fn = nn.CrossEntropyLoss(label_smoothing=s["label_smoothing"])
    trainer = Trainer(model, optimizer, loss_fn=loss_fn, scheduler=scheduler, scheduler_interval="step", clip_grad_norm=config["clip_grad_norm"])
    start = 0
    if checkpoint is not None:
        start = trainer.restore(checkpoint, loader=train_loader)
        _refuse_non_finite(checkpoint, model, optimizer)
        if s["epochs"] != checkpoint.config["epochs"]:
            print("xpnn: " + _replan(scheduler, checkpoint.config["epochs"], s["epochs"], len(train_loader)), file=sys.stderr)

    removed = folder.claim()
    try:
        if removed:
            names = ", ".join(p.name for p in removed)
            print(f"xpnn: removed {_plural(len(removed), 'temporary file')} left in {folder.path} by an interrupted write ({names})", file=sys.stderr)
        return _fit(args, s, trainer, folder, checkpoint, config, train_loader, test_loader, train_set, test_set, start, y_test)
    finally:
        folder.release()


def _fit(args, s, trainer, folder, checkpoint, config, train_loader, test_loader, train_set, test_set, start, y_test):
    """Train in the claimed ``folder``; report how the run ended and what was written."""
    from .files import signals_held
    from .train import Callback, ModelCheckpoint, WarnOnDivergence

    saver = ModelCheckpoint(folder.checkpoint, config=config)

    class WriteHistory(Callback):
        def on_epoch_end(self, epoch, logs):
            with signals_held():
                self.trainer.history.save(folder.history)

    model = trainer.model
    verb = f"resuming at epoch {start + 1}" if checkpoint is not None else "training"
    print(
        f"xpnn: {verb} {s['model']} ({model.num_parameters():,} parameters) on {train_set.name}: {len(train_set)} training images, "
        f"validation = the {len(test_set)}-image test split; device {backend.device_name(model.xp)}; {s['optimizer']} lr {s['lr']:g}, "
        f"batch {s['batch_size']}, {s['schedule']} schedule, {_plural(s['epochs'], 'epoch')}, seed {s['seed']}; run folder {folder.path}",
        flush=True,
    )
    callbacks = [saver, WriteHistory(), WarnOnDivergence()]
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is reported once, by NonFiniteLossError
            history = trainer.fit(train_loader, s["epochs"], valid=test_loader, callbacks=callbacks, start_epoch=start, progress=False if args.no_progress else None)
    except KeyboardInterrupt as exc:
        raise type(exc)(_kept(saver, checkpoint)) from None
    except NonFiniteLossError as exc:
        raise NonFiniteLossError(f"{exc}; {_kept(saver, checkpoint)}") from None

    written = [f"{folder.checkpoint} (checkpoint)", str(folder.history)]
    if importlib.util.find_spec("matplotlib") is not None:
        from .train import plot_history

        with signals_held():
            plot_history(history, folder.curves)
        written.append(str(folder.curves))
    else:
        print("xpnn: matplotlib is not installed, so no curves.png; pip install 'xpnn[plot]'", file=sys.stderr)
    if history["val_acc"]:
        accuracy = history["val_acc"][-1]
        print(f"test accuracy {accuracy:.2%} (loss {history['val_loss'][-1]:.4f}) after {_plural(history.epochs, 'epoch')}")
        chance, majority = _chance_level(accuracy, y_test)
        if chance:
            warnings.warn(
                f"test accuracy {accuracy:.2%} is at chance level (always answering the most frequent class scores {majority:.2%}): "
                f"the model learned nothing; try a lower learning rate than {s['lr']:g}"
            )
    print("wrote " + ", ".join(written))
    return 0


def _plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


# ---- eval ------------------------------------------------------------------------------------


def _eval(args):
    from . import nn
    from .data import load_dataset
    from .train import Trainer, confusion_matrix, format_confusion_matrix

    checkpoint = _load_run_checkpoint(args.checkpoint, ("dataset",))
    config = checkpoint.config
    xp = backend.resolve(args.device)
    if "model" not in config:  # a model built in Python, rebuilt from its saved architecture
        model = checkpoint.build_model(device=xp)
    else:  # a checkpoint of 'xpnn train' (older ones hold no architecture): the run config names the model
        _check_run_config(checkpoint, ("model", "dataset", "image_shape", "num_classes"))
        model = build_model(config["model"], config["image_shape"], config["num_classes"], device=xp)
        checkpoint.restore(model, rng=False)
    _refuse_non_finite(checkpoint, model)
    test_set = load_dataset(config["dataset"], train=False, root=args.data_dir or _remembered_data_dir(checkpoint))
    x, y = test_set.arrays()
    if "image_shape" in config and tuple(x.shape[1:]) != tuple(config["image_shape"]):
        raise CheckpointError(f"checkpoint {checkpoint.path} expects images of shape {tuple(config['image_shape'])}, the {test_set.name} test split has {tuple(x.shape[1:])}")
    num_classes = config.get("num_classes", len(test_set.classes))

    logits = Trainer(model, None, verbose=False).predict(x, batch_size=EVAL_BATCH, logits=True)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise CheckpointError(f"checkpoint {checkpoint.path}: its model gives outputs of shape {tuple(logits.shape)} on the {test_set.name} test split, expected (N, {num_classes}) class scores")
    loss = float(nn.CrossEntropyLoss()(logits, backend.asarray(y, xp, device=model.device)))
    predicted = backend.to_numpy(xp.argmax(logits, axis=1))
    accuracy = float((predicted == y).mean())
    cm = confusion_matrix(y, predicted, num_classes)
    if args.json:
        print(json.dumps({"loss": loss, "accuracy": accuracy, "confusion_matrix": cm.tolist(), "dataset": test_set.name, "samples": len(y), "epoch": checkpoint.epoch}))
        return 0
    print(f"checkpoint {checkpoint.path}: {config.get('model', checkpoint.model_class)} trained {_plural(checkpoint.epoch, 'epoch')} on {test_set.name}")
    print(f"test split: {len(y)} images; loss {loss:.4f}  accuracy {accuracy:.2%}")
    print("confusion matrix (rows: true class, columns: predicted class):")
    print(format_confusion_matrix(cm, config.get("classes")))
    return 0


# ---- info ------------------------------------------------------------------------------------


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _info(args):
    print(f"xpnn {__version__}")
    print(f"python {platform.python_version()} ({platform.platform()})")
    for name in ("numpy", "array-api-compat", "array-api-strict", "tqdm", "matplotlib"):
        print(f"{name} {_version(name) or 'not installed'}")
    try:
        cupy = importlib.import_module("cupy")
        print(f"cupy {cupy.__version__}")
    except ImportError:
        print(f"cupy not installed ({backend.CUDA_INSTALL_HINT})")
        cupy = None
    devices = backend.available()
    print("devices: " + ", ".join(devices))
    for device in devices:
        if device.startswith("cuda:") and cupy is not None:
            props = cupy.cuda.runtime.getDeviceProperties(int(device[5:]))
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            print(f"  {device}: {name}, {props['totalGlobalMem'] / 2**30:.1f} GiB")
    return 0

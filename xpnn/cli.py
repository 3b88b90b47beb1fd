"""The ``xpnn`` command: ``xpnn train``, ``xpnn eval`` and ``xpnn info``.

Every mistake a user can make (a bad option, a missing or corrupt file, ``--device cuda`` without
CuPy or a GPU, a checkpoint that does not fit, a diverging run) ends with one line on stderr,
``xpnn: error: ...``, and exit status 2; Ctrl-C exits with 130 and says which checkpoint is intact.
"""

import argparse
import importlib
import importlib.metadata
import importlib.util
import json
import platform
import sys
from pathlib import Path

import numpy as np

from . import __version__, backend, optim
from .data.registry import DATASETS
from .errors import CheckpointError, ConfigError, XpnnError
from .models import MODELS, build_model


def _cosine(optimizer, epochs, steps_per_epoch):
    """Cosine decay of the learning rate to zero over the run."""
    return optim.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)


def _step(optimizer, epochs, steps_per_epoch):
    """The learning rate x0.1 after each third of the epochs."""
    return optim.StepLR(optimizer, step_size=max(1, epochs // 3) * steps_per_epoch, gamma=0.1)


def _constant(optimizer, epochs, steps_per_epoch):
    """No scheduler: the learning rate stays as given."""
    return None


OPTIMIZERS = {
    "sgd": lambda params, lr: optim.SGD(params, lr=lr, momentum=0.9),
    "adam": lambda params, lr: optim.Adam(params, lr=lr),
    "adamw": lambda params, lr: optim.AdamW(params, lr=lr),
}
SCHEDULES = {"cosine": _cosine, "step": _step, "none": _constant}
DEFAULTS = {"dataset": "mnist", "model": "mlp", "optimizer": "adam", "seed": 0, "schedule": "cosine"}
MODEL_DEFAULTS = {  # one per name in models.MODELS; they reach >= 98% (mlp, 10 epochs) and >= 99% (lenet, 3 epochs) MNIST test accuracy
    "mlp": {"epochs": 10, "batch_size": 64, "lr": 1e-3},
    "cnn": {"epochs": 5, "batch_size": 64, "lr": 1e-3},
    "lenet": {"epochs": 5, "batch_size": 32, "lr": 2e-3},
}
SETTINGS = (*DEFAULTS, "epochs", "batch_size", "lr")
EVAL_BATCH = 1000


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
        "batch size, learning rate and epochs per model as listed below.",
    )
    train.add_argument("--dataset", choices=tuple(DATASETS), help=f"dataset (default {DEFAULTS['dataset']})")
    train.add_argument("--model", choices=tuple(MODELS), help=f"model (default {DEFAULTS['model']})")
    train.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    train.add_argument("--epochs", type=_positive_int, help=f"total epochs (default {_per_model('epochs')}; on --resume, the checkpoint's)")
    train.add_argument("--batch-size", type=_positive_int, help=f"training batch size (default {_per_model('batch_size')})")
    train.add_argument("--optimizer", choices=tuple(OPTIMIZERS), help=f"optimizer (default {DEFAULTS['optimizer']}; sgd uses momentum 0.9)")
    train.add_argument("--lr", type=_positive_float, help=f"initial learning rate (default {_per_model('lr')})")
    train.add_argument("--schedule", choices=tuple(SCHEDULES), help=f"learning-rate schedule over the epochs, stepped every batch (default {DEFAULTS['schedule']})")
    train.add_argument("--seed", type=_non_negative_int, help="seed of weights, shuffling and dropout (default 0)")
    train.add_argument("--data-dir", help="directory holding (or receiving) the dataset files (default: $XPNN_DATA_DIR or ~/.cache/xpnn)")
    train.add_argument("--out", help="output directory (default runs/<dataset>-<model>; on --resume, the checkpoint's directory)")
    train.add_argument("--resume", metavar="CHECKPOINT", help="continue the run saved in CHECKPOINT (a model.npz) up to --epochs")
    train.add_argument("--no-progress", action="store_true", help="no progress bar (the per-epoch lines stay)")
    train.set_defaults(func=_train)

    evaluate = commands.add_parser(
        "eval", help="evaluate a checkpoint on its dataset's test split", description="Evaluate CHECKPOINT on the test split of the dataset it was trained on."
    )
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="a model.npz written by xpnn train")
    evaluate.add_argument("--data-dir", help="directory holding the dataset files")
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
    try:
        return args.func(args) or 0
    except KeyboardInterrupt as exc:
        print("xpnn: interrupted" + (f"; {exc}" if str(exc) else ""), file=sys.stderr)
        return 130
    except XpnnError as exc:
        return _fail(str(exc))
    except OSError as exc:
        return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc))


def _fail(message):
    print("xpnn: error: " + " ".join(message.split()), file=sys.stderr)
    return 2


# ---- train -----------------------------------------------------------------------------------


def _settings(args, checkpoint):
    """The run's settings: the options given, else the checkpoint's (on --resume), else the defaults
    (per model for epochs, batch size and learning rate)."""
    given = {key: getattr(args, key) for key in SETTINGS}
    if checkpoint is None:
        settings = {key: DEFAULTS[key] if given[key] is None else given[key] for key in DEFAULTS}
        model_defaults = MODEL_DEFAULTS[settings["model"]]
        settings.update({key: model_defaults[key] if given[key] is None else given[key] for key in model_defaults})
        return settings
    config = checkpoint.config
    missing = [key for key in SETTINGS if key not in config]
    if missing:
        raise CheckpointError(f"checkpoint {checkpoint.path} was not written by 'xpnn train' (its config lacks {', '.join(missing)}); it cannot be resumed here")
    for key, value in given.items():
        if key != "epochs" and value is not None and value != config[key]:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(f"{flag} {value} conflicts with checkpoint {checkpoint.path}, trained with {flag} {config[key]}; drop {flag} to resume it")
    settings = {key: config[key] for key in SETTINGS}
    settings["epochs"] = args.epochs or config["epochs"]
    if checkpoint.epoch >= settings["epochs"]:
        raise ConfigError(f"checkpoint {checkpoint.path} has already completed {checkpoint.epoch} epochs; pass --epochs N with N > {checkpoint.epoch} to train further")
    return settings


def _train(args):
    from . import random as xpnn_random
    from .data import DataLoader, load_dataset
    from .train import Callback, ModelCheckpoint, Trainer, load_checkpoint

    checkpoint = load_checkpoint(args.resume) if args.resume else None
    s = _settings(args, checkpoint)
    xp = backend.resolve(args.device)  # fails fast on --device cuda without CuPy or a GPU
    if args.out:
        out = Path(args.out)
    elif checkpoint is not None:
        out = checkpoint.path.parent
    else:
        out = Path("runs") / f"{s['dataset']}-{s['model']}"
    train_set = load_dataset(s["dataset"], train=True, root=args.data_dir)
    test_set = load_dataset(s["dataset"], train=False, root=args.data_dir)
    x, y = train_set.arrays()
    x_test, y_test = test_set.arrays()
    image_shape = tuple(x.shape[1:])
    classes = list(train_set.classes)

    xpnn_random.manual_seed(s["seed"])
    model = build_model(s["model"], image_shape, len(classes), device=xp)
    optimizer = OPTIMIZERS[s["optimizer"]](model.parameters(), s["lr"])
    train_loader = DataLoader(x, y, batch_size=s["batch_size"], shuffle=True, seed=s["seed"], device=xp)
    scheduler = SCHEDULES[s["schedule"]](optimizer, s["epochs"], len(train_loader))
    test_loader = DataLoader(x_test, y_test, batch_size=EVAL_BATCH, device=xp)
    config = dict(s, dataset=train_set.name, image_shape=list(image_shape), num_classes=len(classes), classes=classes)

    trainer = Trainer(model, optimizer, scheduler=scheduler, scheduler_interval="step")
    start = 0
    if checkpoint is not None:
        start = trainer.restore(checkpoint, loader=train_loader)
        if isinstance(scheduler, optim.CosineAnnealingLR):  # more epochs than planned: stretch the cosine
            scheduler.T_max = max(scheduler.T_max, s["epochs"] * len(train_loader))

    out.mkdir(parents=True, exist_ok=True)
    model_path, history_path, curves_path = out / "model.npz", out / "history.json", out / "curves.png"
    saver = ModelCheckpoint(model_path, config=config)

    class WriteHistory(Callback):
        def on_epoch_end(self, epoch, logs):
            self.trainer.history.save(history_path)

    verb = f"resuming at epoch {start + 1}" if checkpoint is not None else "training"
    print(
        f"xpnn: {verb} {s['model']} ({model.num_parameters():,} parameters) on {train_set.name}: {len(train_set)} training images, "
        f"validation = the {len(test_set)}-image test split; device {backend.device_name(xp)}; {s['optimizer']} lr {s['lr']:g}, "
        f"batch {s['batch_size']}, {s['schedule']} schedule, {_plural(s['epochs'], 'epoch')}, seed {s['seed']}",
        flush=True,
    )
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is reported once, by NonFiniteLossError
            history = trainer.fit(train_loader, s["epochs"], valid=test_loader, callbacks=[saver, WriteHistory()], start_epoch=start, progress=not args.no_progress)
    except KeyboardInterrupt:
        if saver.last_saved is not None:
            raise KeyboardInterrupt(f"the last checkpoint, {model_path} (epoch {saver.last_saved}), is intact") from None
        if checkpoint is not None:
            raise KeyboardInterrupt(f"no epoch completed; {checkpoint.path} (epoch {checkpoint.epoch}) is unchanged") from None
        raise KeyboardInterrupt("no epoch completed, so no checkpoint was written") from None

    written = [f"{model_path} (checkpoint)", str(history_path)]
    if importlib.util.find_spec("matplotlib") is not None:
        from .train import plot_history

        plot_history(history, curves_path)
        written.append(str(curves_path))
    else:
        print("xpnn: matplotlib is not installed, so no curves.png; pip install 'xpnn[plot]'", file=sys.stderr)
    if history["val_acc"]:
        print(f"test accuracy {history['val_acc'][-1]:.2%} (loss {history['val_loss'][-1]:.4f}) after {_plural(history.epochs, 'epoch')}")
    print("wrote " + ", ".join(written))
    return 0


def _plural(n, word):
    return f"{n} {word}{'' if n == 1 else 's'}"


# ---- eval ------------------------------------------------------------------------------------


def _eval(args):
    from . import nn
    from .data import load_dataset
    from .train import Trainer, confusion_matrix, format_confusion_matrix, load_checkpoint

    checkpoint = load_checkpoint(args.checkpoint)
    config = checkpoint.config
    missing = [key for key in ("model", "dataset", "image_shape", "num_classes") if key not in config]
    if missing:
        raise CheckpointError(f"checkpoint {checkpoint.path} has no model config ({', '.join(missing)} missing); was it written by 'xpnn train'?")
    xp = backend.resolve(args.device)
    model = build_model(config["model"], config["image_shape"], config["num_classes"], device=xp)
    checkpoint.restore(model, rng=False)
    test_set = load_dataset(config["dataset"], train=False, root=args.data_dir)
    x, y = test_set.arrays()
    if tuple(x.shape[1:]) != tuple(config["image_shape"]):
        raise CheckpointError(f"checkpoint {checkpoint.path} expects images of shape {tuple(config['image_shape'])}, the {test_set.name} test split has {tuple(x.shape[1:])}")

    logits = Trainer(model, None, verbose=False).predict(x, batch_size=EVAL_BATCH, logits=True)
    loss = float(nn.CrossEntropyLoss()(logits, backend.asarray(y, xp, device=model.device)))
    predicted = backend.to_numpy(xp.argmax(logits, axis=1))
    accuracy = float((predicted == y).mean())
    cm = confusion_matrix(y, predicted, config["num_classes"])
    if args.json:
        print(json.dumps({"loss": loss, "accuracy": accuracy, "confusion_matrix": cm.tolist(), "dataset": test_set.name, "samples": len(y), "epoch": checkpoint.epoch}))
        return 0
    print(f"checkpoint {checkpoint.path}: {config['model']} trained {_plural(checkpoint.epoch, 'epoch')} on {test_set.name}")
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

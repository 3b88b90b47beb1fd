"""``xpnn train``: the settings of the run, its folder (chosen and checked before anything is
written), the data and the model, then the fit with a checkpoint and the history every epoch,
and the report of how the run ended and what it wrote."""

import importlib.util
import math
import sys
import warnings
from pathlib import Path

import numpy as np

from .. import backend
from ..data.registry import DATASETS
from ..errors import ConfigError, MissingDataError, NonFiniteLossError
from ..models import build_model
from .recipes import EVAL_BATCH, OPTIMIZERS, SCHEDULES, SETTINGS, replan
from .run_config import load_run_checkpoint, refuse_non_finite, remembered_data_dir, resolve_settings
from .text import plural


def _run_folder(args, settings, checkpoint):
    """Where this run writes, checked (not yet created): --out, else the resumed checkpoint's
    folder, else the first free runs/<dataset>-<model>[-N]. A folder holding another run's
    checkpoint is refused unless --overwrite."""
    from ..train import RunFolder

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



def _augmentation(dataset, augment):
    """The dataset's training transforms when ``augment``, else None."""
    from ..data.transforms import default_transforms

    if not augment:
        return None
    transform = default_transforms(dataset)
    if transform is None:
        with_augmentation = ", ".join(name for name, info in DATASETS.items() if info.augment)
        raise ConfigError(f"--augment: no augmentation is defined for {dataset} (only for {with_augmentation}); drop --augment")
    return transform



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


def train_command(args):
    """``xpnn train``; under ``mpiexec -n N`` (or ``--distributed``) one rank of a data-parallel
    run: an error on any rank is printed once, naming the rank, and ends every rank (MPI abort)."""
    from ..distributed.comm import get_communicator

    comm = get_communicator(getattr(args, "distributed", "auto"))
    if comm.size == 1:
        return _train(args, comm)
    from ..distributed.data_parallel import fail

    try:
        return _train(args, comm)
    except BaseException as exc:
        fail(comm, exc)
        raise


def _rank_device(device, comm):
    """The device of this rank: on CUDA, GPU ``local_rank`` unless a GPU was named."""
    if comm.size > 1 and device.strip().lower() == "cuda":
        return f"cuda:{comm.local_rank}"
    if comm.name == "nccl" and not device.strip().lower().startswith("cuda"):
        raise ConfigError(f"--distributed nccl reduces GPU arrays: expected --device cuda, found --device {device}")
    return device


def _train(args, comm):
    from .. import nn
    from .. import random as xpnn_random
    from ..data import DataLoader, load_dataset
    from ..optim import weight_decay_groups
    from ..train import Trainer

    checkpoint = load_run_checkpoint(args.resume, SETTINGS) if args.resume is not None else None
    s = resolve_settings(args, checkpoint)
    xp = backend.resolve(_rank_device(args.device, comm))  # fails fast on --device cuda without CuPy or a GPU
    if comm.size == 1:
        folder = _run_folder(args, s, checkpoint)
    else:  # rank 0 chooses and checks the folder; the others only learn its path, and never write
        from ..train import RunFolder

        folder = _run_folder(args, s, checkpoint) if comm.rank == 0 else None
        path = comm.allgather(str(folder.path) if folder is not None else None)[0]
        folder = folder if folder is not None else RunFolder(path)
    data_dir = args.data_dir or remembered_data_dir(checkpoint)
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
    trainer = Trainer(model, optimizer, loss_fn=loss_fn, scheduler=scheduler, scheduler_interval="step", clip_grad_norm=config["clip_grad_norm"],
                      distributed=comm if comm.size > 1 else None, threads=args.threads)
    start = 0
    if checkpoint is not None:
        start = trainer.restore(checkpoint, loader=train_loader)
        refuse_non_finite(checkpoint, model, optimizer)
        if s["epochs"] != checkpoint.config["epochs"] and comm.rank == 0:
            print("xpnn: " + replan(scheduler, checkpoint.config["epochs"], s["epochs"], len(train_loader)), file=sys.stderr)

    if comm.rank != 0:  # the other ranks train and evaluate; rank 0 writes and reports
        _fit(args, s, trainer, folder, checkpoint, config, train_loader, test_loader, train_set, test_set, start, y_test)
        return 0
    removed = folder.claim()
    try:
        if removed:
            names = ", ".join(p.name for p in removed)
            print(f"xpnn: removed {plural(len(removed), 'temporary file')} left in {folder.path} by an interrupted write ({names})", file=sys.stderr)
        return _fit(args, s, trainer, folder, checkpoint, config, train_loader, test_loader, train_set, test_set, start, y_test)
    finally:
        folder.release()


def _fit(args, s, trainer, folder, checkpoint, config, train_loader, test_loader, train_set, test_set, start, y_test):
    """Train in the claimed ``folder``; report how the run ended and what was written."""
    from ..files import signals_held
    from ..train import Callback, ModelCheckpoint, WarnOnDivergence

    saver = ModelCheckpoint(folder.checkpoint, config=config)
    rank = trainer.rank

    class WriteHistory(Callback):
        rank_zero_only = True

        def on_epoch_end(self, epoch, logs):
            with signals_held():
                self.trainer.history.save(folder.history)

    model = trainer.model
    verb = f"resuming at epoch {start + 1}" if checkpoint is not None else "training"
    ranks = f" on {trainer._dp.size} ranks ({trainer._dp.comm.name})" if trainer._dp is not None else ""
    if rank == 0:
        print(
            f"xpnn: {verb} {s['model']} ({model.num_parameters():,} parameters) on {train_set.name}: {len(train_set)} training images, "
            f"validation = the {len(test_set)}-image test split; device {backend.device_name(model.xp)}; {s['optimizer']} lr {s['lr']:g}, "
            f"batch {s['batch_size']}{ranks}, {s['schedule']} schedule, {plural(s['epochs'], 'epoch')}, seed {s['seed']}; run folder {folder.path}",
            flush=True,
        )
    callbacks = [saver, WriteHistory(), WarnOnDivergence()] if rank == 0 else []
    try:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # divergence is reported once, by NonFiniteLossError
            history = trainer.fit(train_loader, s["epochs"], valid=test_loader, callbacks=callbacks, start_epoch=start, progress=False if args.no_progress else None)
    except KeyboardInterrupt as exc:
        raise type(exc)(_kept(saver, checkpoint)) from None
    except NonFiniteLossError as exc:
        raise NonFiniteLossError(f"{exc}; {_kept(saver, checkpoint)}") from None
    if rank != 0:
        return 0

    written = [f"{folder.checkpoint} (checkpoint)", str(folder.history)]
    if importlib.util.find_spec("matplotlib") is not None:
        from ..train import plot_history

        with signals_held():
            plot_history(history, folder.curves)
        written.append(str(folder.curves))
    else:
        print("xpnn: matplotlib is not installed, so no curves.png; pip install 'xpnn[plot]'", file=sys.stderr)
    if history["val_acc"]:
        accuracy = history["val_acc"][-1]
        print(f"test accuracy {accuracy:.2%} (loss {history['val_loss'][-1]:.4f}) after {plural(history.epochs, 'epoch')}")
        chance, majority = _chance_level(accuracy, y_test)
        if chance:
            warnings.warn(
                f"test accuracy {accuracy:.2%} is at chance level (always answering the most frequent class scores {majority:.2%}): "
                f"the model learned nothing; try a lower learning rate than {s['lr']:g}"
            )
    print("wrote " + ", ".join(written))
    return 0

"""A run's settings and the run config a checkpoint carries: the schema every value of a
checkpoint's config must meet (it is untrusted input), the checks made before a checkpoint is
used (present keys, valid values, finite state), and the resolution of the settings of a run from
the options given, the resumed checkpoint's config and the recipes."""

import math
from pathlib import Path

from ..data.registry import DATASETS
from ..errors import CheckpointError, ConfigError
from ..models import MODELS
from .recipes import ALL_SETTINGS, DEFAULTS, LATER_DEFAULTS, MODEL_DEFAULTS, OPTIMIZERS, SCHEDULES
from .text import plural

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


def check_run_config(checkpoint, required):
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


def resolve_settings(args, checkpoint):
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
                f"checkpoint {checkpoint.path} has already completed {plural(checkpoint.epoch, 'epoch')}; pass --epochs N with N > {checkpoint.epoch} to train further"
            )
    if settings["augment"] is None:
        settings["augment"] = DATASETS[settings["dataset"]].augment
    return settings


def _flag(key, value):
    """How the command line spells setting ``key`` = ``value``."""
    if key == "augment":
        return "--augment" if value else "--no-augment"
    return f"--{key.replace('_', '-')} {value}"


def load_run_checkpoint(path, required):
    from ..train import load_checkpoint

    if not path.strip():
        raise ConfigError(f"expected a checkpoint path, got {path!r} (an unset shell variable?)")
    checkpoint = load_checkpoint(path)
    check_run_config(checkpoint, required)
    return checkpoint



def refuse_non_finite(checkpoint, model, optimizer=None):
    """A checkpoint holding NaN or infinity (a diverged run saved by an older xpnn, or edited) is
    neither evaluated nor resumed."""
    from ..train.finite import non_finite_state

    problem = non_finite_state(model, optimizer)
    if problem is not None:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} holds a NaN or infinite {problem}: the run it saved had diverged; "
            "use an earlier checkpoint or start a new run with a lower learning rate"
        )



def remembered_data_dir(checkpoint):
    """The data folder the checkpoint's run was trained with (its --data-dir), if it still exists."""
    folder = checkpoint.config.get("data_dir") if checkpoint is not None else None
    return folder if folder and Path(folder).is_dir() else None

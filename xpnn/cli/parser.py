"""The ``xpnn`` command line: its argparse parser, whose usage errors are one line, and the argument
types that check numbers as they are parsed. Choices and defaults come from the registries and the
recipes; each subcommand names the function that runs it."""

import argparse
import sys

from .. import __version__
from ..data.registry import DATASETS
from ..models import MODELS
from .evaluate import eval_command
from .export import export_command
from .info import info_command
from .recipes import DEFAULTS, MODEL_DEFAULTS, OPTIMIZERS, SCHEDULES
from .train import train_command


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


def _float_where(accepts, what):
    """An argparse type accepting the floats for which ``accepts(value)`` holds, described as
    ``what`` in its error (NaN is never accepted: every comparison with it is false)."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not accepts(value):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    return parse


_positive_float = _float_where(lambda v: 0 < v < float("inf"), "a positive number")
_non_negative_float = _float_where(lambda v: 0 <= v < float("inf"), "a number >= 0")
_fraction = _float_where(lambda v: 0 <= v < 1, "a number in [0, 1)")


def _per_model(key):
    return ", ".join(f"{model} {defaults[key]:g}" for model, defaults in MODEL_DEFAULTS.items())


def build_parser():
    parser = _Parser(prog="xpnn", description="Train and evaluate small neural networks on NumPy (CPU) or CuPy (CUDA).")
    parser.add_argument("--version", action="version", version=f"xpnn {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{train,eval,export,info}")

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
    train.add_argument(
        "--threads", type=_positive_int, metavar="N",
        help="threads xpnn splits each step over on the CPU, NumPy's BLAS held to one meanwhile (default: the cores BLAS "
        "would use for a network with a convolution of 16 or more channels, else 1 and BLAS's own threads; see xpnn.threads)",
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
    train.add_argument(
        "--distributed", choices=("auto", "mpi", "nccl", "none"), default="auto",
        help="data-parallel training under mpiexec -n N: auto (MPI when an MPI launcher started several ranks; the default), mpi, "
        "nccl (CuPy, one GPU a rank: --device cuda) or none",
    )
    train.set_defaults(func=train_command)

    evaluate = commands.add_parser(
        "eval", help="evaluate a checkpoint on its dataset's test split", description="Evaluate CHECKPOINT on the test split of the dataset it was trained on."
    )
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT", help="a model.npz written by xpnn train")
    evaluate.add_argument("--data-dir", help="directory holding the dataset files (default: the one the run was trained with, if it still exists)")
    evaluate.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object (loss, accuracy, confusion_matrix) instead of text")
    evaluate.set_defaults(func=eval_command)

    export = commands.add_parser(
        "export", help="write a checkpoint's model as an ONNX file",
        description="Write CHECKPOINT's model in eval form (BatchNorm's running statistics, no dropout) as an ONNX graph "
        "with a dynamic batch dimension, for ONNX Runtime. Needs the onnx extra: pip install 'xpnn[onnx]'.",
    )
    export.add_argument("checkpoint", metavar="CHECKPOINT", help="a model.npz written by xpnn train")
    export.add_argument("--onnx", required=True, metavar="PATH", help="the .onnx file to write (refused if it exists, unless --overwrite)")
    export.add_argument("--opset", type=_int_at_least(17, "an opset >= 17"), default=17, help="ONNX opset (default 17; Gelu is its own operator from 20)")
    export.add_argument("--overwrite", action="store_true", help="replace PATH if it exists")
    export.set_defaults(func=export_command)

    info = commands.add_parser("info", help="versions, backends and devices", description="Print versions, backends and devices.")
    info.set_defaults(func=info_command)
    return parser

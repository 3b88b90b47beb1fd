"""Training: the Trainer loop, its History, callbacks, checkpoints and plots."""

from .callbacks import Callback, EarlyStopping, ModelCheckpoint, WarnOnDivergence
from .checkpoint import Checkpoint, load_checkpoint, restore, save_checkpoint
from .history import History
from .metrics import METRICS, confusion_matrix, correct_count, format_confusion_matrix
from .plot import plot_confusion_matrix, plot_history
from .run_folder import RunFolder
from .trainer import Trainer, default_threads

__all__ = [
    "Trainer", "default_threads", "History",
    "Callback", "ModelCheckpoint", "EarlyStopping", "WarnOnDivergence",
    "Checkpoint", "save_checkpoint", "load_checkpoint", "restore",
    "METRICS", "correct_count", "confusion_matrix", "format_confusion_matrix",
    "plot_history", "plot_confusion_matrix", "RunFolder",
]

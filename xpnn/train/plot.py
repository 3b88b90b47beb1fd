"""Plots of a training run: loss and accuracy curves, and the confusion matrix.

matplotlib (the ``plot`` extra) is imported only when a plot is made; figures are built with
``matplotlib.figure.Figure`` (no pyplot state, no GUI), returned for display in a notebook, and
saved atomically when a path is given.
"""

from pathlib import Path

import numpy as np

from ..files import atomic_write
from .metrics import confusion_matrix  # noqa: F401  (re-exported: xpnn.train.plot.confusion_matrix)

INSTALL_HINT = "pip install 'xpnn[plot]' (or pip install matplotlib)"


def _figure(**kwargs):
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"plotting needs matplotlib, which is not installed; {INSTALL_HINT}") from exc
    return Figure(**kwargs)


def _save(fig, path):
    path = Path(path)
    fmt = path.suffix[1:].lower() or "png"
    with atomic_write(path) as f:
        fig.savefig(f, format=fmt, dpi=120)


def plot_history(history, path=None):
    """Loss (left) and accuracy (right) per epoch, training and validation, from a :class:`History`
    or any dict with the same keys. Returns the figure; writes it to ``path`` (format from the
    suffix, PNG by default) when given."""
    fig = _figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    for ax, keys, title in ((ax_loss, ("loss", "val_loss"), "loss"), (ax_acc, ("acc", "val_acc"), "accuracy")):
        count = 0
        for key, label in zip(keys, ("train", "valid")):
            values = [np.nan if v is None else v for v in history.get(key) or []]
            if values:
                epochs = np.arange(1, len(values) + 1)
                ax.plot(epochs, values, marker="o" if len(values) < 30 else None, label=label)
                count = max(count, len(values))
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend()
            _epoch_ticks(ax, count)
        else:
            ax.text(0.5, 0.5, f"no {title} recorded", ha="center", va="center", transform=ax.transAxes)
    if path is not None:
        _save(fig, path)
    return fig


def _epoch_ticks(ax, count, every_up_to=12):
    """Whole epochs on the x axis: each epoch for a short run (a 1-epoch run gets the single tick
    1, not 0.94 ... 1.06), else whole numbers chosen by matplotlib."""
    if count <= every_up_to:
        ax.set_xticks(np.arange(1, count + 1))
        ax.set_xlim(0.5, count + 0.5)
    else:
        ax.xaxis.get_major_locator().set_params(integer=True)


def plot_confusion_matrix(cm, class_names=None, path=None, normalize=False):
    """The confusion matrix ``cm`` (rows true, columns predicted) as an annotated heat map; with
    ``normalize`` each row is shown as fractions of its true class. Returns the figure; writes it
    to ``path`` when given."""
    cm = np.asarray(cm)
    k = len(cm)
    names = [str(n) for n in (class_names if class_names is not None else range(k))]
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    size = max(4.0, 0.5 * k + 2)
    fig = _figure(figsize=(size + 1, size), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(shown, cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    ax.set_xticks(range(k), names, rotation=45 if max(len(n) for n in names) > 2 else 0, ha="right" if max(len(n) for n in names) > 2 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 20:
        threshold = shown.max() / 2 if shown.size else 0
        for i in range(k):
            for j in range(k):
                text = f"{shown[i, j]:.2f}" if normalize else str(int(cm[i, j]))
                ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if shown[i, j] > threshold else "black")
    if path is not None:
        _save(fig, path)
    return fig

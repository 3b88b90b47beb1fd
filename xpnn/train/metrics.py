"""Metrics: per-batch counts computed on the device (read back by the Trainer once per log
interval), and the host-side confusion matrix."""

import numpy as np

from .. import backend
from ..errors import ShapeError


def correct_count(logits, target):
    """0-d device array: how many rows of ``logits`` (N, C) have their argmax at the label.
    ``target`` is integer labels (N,) or class probabilities / one-hot rows (N, C)."""
    xp = backend.namespace_of(logits)
    if target.ndim == 2:
        target = xp.argmax(target, axis=1)
    return xp.count_nonzero(xp.argmax(logits, axis=1) == target)


METRICS = {"accuracy": ("acc", correct_count)}
"""Metric name -> (history key, per-batch count function); the Trainer divides by the sample count."""


def confusion_matrix(y_true, y_pred, num_classes):
    """Host int64 (num_classes, num_classes) counts: row = true class, column = predicted class
    (scikit-learn's convention). Accepts NumPy arrays, lists or any backend's arrays."""
    t = np.asarray(backend.to_numpy(y_true) if hasattr(y_true, "shape") else y_true).astype(np.int64).ravel()
    p = np.asarray(backend.to_numpy(y_pred) if hasattr(y_pred, "shape") else y_pred).astype(np.int64).ravel()
    k = int(num_classes)
    if t.shape != p.shape:
        raise ShapeError(f"confusion_matrix: expected y_true and y_pred of the same length, got {t.size} and {p.size}")
    for name, v in (("y_true", t), ("y_pred", p)):
        if v.size and (v.min() < 0 or v.max() >= k):
            bad = v[(v < 0) | (v >= k)][0]
            raise ShapeError(f"confusion_matrix: expected {name} in [0, {k - 1}], got {bad}")
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def format_confusion_matrix(cm, class_names=None):
    """The matrix as aligned text, rows = true class, columns = predicted class."""
    cm = np.asarray(cm)
    names = [str(n) for n in (class_names if class_names is not None else range(len(cm)))]
    width = max(max(len(n) for n in names), len(str(int(cm.max()))) if cm.size else 1)
    label = max(len(n) for n in names + ["true\\pred"])
    lines = ["true\\pred".ljust(label) + " " + " ".join(n.rjust(width) for n in names)]
    for name, row in zip(names, cm):
        lines.append(name.ljust(label) + " " + " ".join(str(int(v)).rjust(width) for v in row))
    return "\n".join(lines)

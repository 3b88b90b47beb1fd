"""Plots and the confusion matrix: figures returned and saved atomically, the counts' convention,
and a clear error when matplotlib is missing."""

import sys

import numpy as np
import pytest

import xpnn
from xpnn.errors import ShapeError
from xpnn.train import History, confusion_matrix, format_confusion_matrix, plot_confusion_matrix, plot_history

pytest.importorskip("matplotlib")


def _history(valid=True):
    h = History()
    for e in range(4):
        h.append(loss=1.0 / (e + 1), acc=0.5 + 0.1 * e, epoch_time=0.1, lr=1e-3,
                 val_loss=1.2 / (e + 1) if valid else None, val_acc=0.45 + 0.1 * e if valid else None)
    return h


def test_plot_history_returns_figure_and_saves_atomically(tmp_path):
    assert xpnn.plot_history is plot_history
    path = tmp_path / "curves.png"
    fig = plot_history(_history(), path)
    loss_ax, acc_ax = fig.axes
    assert [line.get_label() for line in loss_ax.lines] == ["train", "valid"]
    np.testing.assert_allclose(acc_ax.lines[1].get_ydata(), [0.45, 0.55, 0.65, 0.75])
    assert path.read_bytes()[:4] == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == ["curves.png"]
    plot_history(_history(), tmp_path / "curves.svg")
    assert (tmp_path / "curves.svg").read_text().lstrip().startswith("<?xml")


def test_plot_history_without_validation_or_accuracy():
    fig = plot_history({"loss": [0.5, 0.4], "val_loss": [], "acc": []})
    assert len(fig.axes[0].lines) == 1 and not fig.axes[1].lines


def test_confusion_matrix_counts_rows_true_columns_predicted():
    cm = confusion_matrix(np.array([0, 0, 1, 2, 2, 2]), np.array([0, 1, 1, 2, 0, 2]), 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 1, 0], [1, 0, 2]])
    assert cm.dtype == np.int64
    text = format_confusion_matrix(cm, ["a", "b", "c"])
    assert text.splitlines() == ["true\\pred a b c", "a         1 1 0", "b         0 1 0", "c         1 0 2"]
    with pytest.raises(ShapeError, match=r"expected y_pred in \[0, 2\], got 3"):
        confusion_matrix([0, 1], [0, 3], 3)
    with pytest.raises(ShapeError, match="same length"):
        confusion_matrix([0, 1], [0], 3)


def test_confusion_matrix_on_every_backend(backend):
    y = backend.asarray(np.array([1, 0, 1]), "int64")
    np.testing.assert_array_equal(confusion_matrix(y, y, 2), [[1, 0], [0, 2]])


def test_plot_confusion_matrix(tmp_path):
    cm = np.array([[5, 1], [0, 4]])
    fig = plot_confusion_matrix(cm, ["cat", "dog"], tmp_path / "cm.png")
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["5", "1", "0", "4"] and (tmp_path / "cm.png").exists()
    fig = plot_confusion_matrix(cm, normalize=True)
    assert [t.get_text() for t in fig.axes[0].texts][:2] == ["0.83", "0.17"]


def test_missing_matplotlib_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"plotting needs matplotlib, which is not installed; pip install 'xpnn\[plot\]'"):
        plot_history(_history())

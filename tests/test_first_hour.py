"""What a new user meets in the first hour (issue 15): nothing printed at import, progress bars only
where they can be drawn, data folders made only to download into, messages that fit the command,
a resumed run whose schedule says what it does, and small things (dtype hints, ticks, plurals)."""

import os
import subprocess
import sys
import textwrap
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
from data_helpers import isolated_env, write_mnist  # noqa: F401 (isolated_env is a fixture)

from xpnn import nn, optim
from xpnn.cli import main
from xpnn.errors import DTypeError
from xpnn.models import build_model
from xpnn.progress import progress_bar, shows_progress
from xpnn.train import History, load_checkpoint, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["--dataset", "digits"]


def _python(code):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, capture_output=True, text=True, timeout=120)


# ---- import and progress bars -------------------------------------------------------------------


def test_importing_xpnn_prints_nothing_and_loads_no_progress_bar():
    run = _python(
        """
        import sys
        import xpnn
        xpnn.Trainer, xpnn.data.load_dataset, xpnn.nn.Linear
        loaded = sorted(name for name in sys.modules if name.split(".")[0] == "tqdm")
        assert not loaded, loaded
        """
    )
    assert (run.returncode, run.stdout, run.stderr) == (0, "", "")


class _FakeShell:
    pass


def _in_fake_notebook(monkeypatch, ipywidgets):
    shell = type("ZMQInteractiveShell", (_FakeShell,), {})()
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))
    real_find_spec = __import__("importlib.util").util.find_spec
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "ipywidgets" and not ipywidgets else real_find_spec(name, *a))


def test_a_notebook_without_ipywidgets_gets_the_text_bar_and_no_warning(monkeypatch, capsys):
    _in_fake_notebook(monkeypatch, ipywidgets=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bar = progress_bar(total=3, desc="epoch 1/1")
        bar.update(3)
        bar.close()
    assert type(bar).__module__ == "tqdm.std" and "epoch 1/1" in capsys.readouterr().err


def test_bars_are_drawn_on_terminals_and_in_notebooks_only(monkeypatch):
    class Stream:
        def __init__(self, tty):
            self.tty = tty

        def isatty(self):
            return self.tty

    assert shows_progress(Stream(True)) and not shows_progress(Stream(False)) and not shows_progress(object())
    _in_fake_notebook(monkeypatch, ipywidgets=True)
    assert shows_progress(Stream(False))


def test_train_into_a_log_file_draws_no_bar_and_a_terminal_gets_one(tmp_path, capsys, monkeypatch):
    assert main(["train", *DIGITS, "--epochs", "1", "--out", str(tmp_path / "log")]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "\r" not in out
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    assert main(["train", *DIGITS, "--epochs", "1", "--out", str(tmp_path / "tty")]) == 0
    assert "epoch 1/1" in capsys.readouterr().err


# ---- data folders and messages ------------------------------------------------------------------


def _mnist_checkpoint(path, data_dir=None):
    model = build_model("mlp", (1, 28, 28), 10)
    config = {"model": "mlp", "dataset": "mnist", "image_shape": [1, 28, 28], "num_classes": 10, "data_dir": data_dir}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model, epoch=1, config=config)
    return path


def test_missing_data_messages_fit_the_command_and_make_no_folders(isolated_env, capsys):
    data_dir = isolated_env / "typo"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(data_dir), "--out", str(isolated_env / "run")]) == 2
    err = capsys.readouterr().err
    assert "mnist: missing" in err and err.rstrip().endswith("or use --dataset digits, which ships with xpnn and needs no download")

    checkpoint = _mnist_checkpoint(isolated_env / "ckpt" / "model.npz")
    assert main(["eval", str(checkpoint), "--data-dir", str(data_dir)]) == 2
    assert main(["eval", str(checkpoint)]) == 2
    err = capsys.readouterr().err
    assert err.count("mnist: missing") == 2 and "--dataset" not in err
    assert not data_dir.exists() and not (isolated_env / "cache").exists()
    assert not (isolated_env / "run").exists()


def test_eval_remembers_the_data_folder_of_its_run(isolated_env, capsys):
    data_dir = isolated_env / "my-data"
    write_mnist(data_dir / "mnist", "train", n=40)
    write_mnist(data_dir / "mnist", "test", n=20)
    out = isolated_env / "run"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(data_dir), "--epochs", "1", "--out", str(out)]) == 0
    assert load_checkpoint(out / "model.npz").config["data_dir"] == str(data_dir.resolve())
    capsys.readouterr()
    assert main(["eval", str(out / "model.npz")]) == 0
    assert "test split: 20 images" in capsys.readouterr().out
    data_dir.rename(isolated_env / "moved")
    assert main(["eval", str(out / "model.npz")]) == 2
    assert "mnist: missing" in capsys.readouterr().err


# ---- a resumed run's schedule -------------------------------------------------------------------


def test_extending_a_finished_cosine_run_respreads_the_schedule_and_says_so(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *DIGITS, "--epochs", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "model.npz"), "--epochs", "4"]) == 0
    err = capsys.readouterr().err
    assert err == "xpnn: the cosine schedule now decays to 0 over 4 epochs (planned: 2); the learning rate goes from 0 to 0.0005\n"
    lrs = load_checkpoint(out / "model.npz").history["lr"]
    assert lrs[2] == pytest.approx(5e-4) and 0 < lrs[3] < lrs[2], "epoch 3 trains at the rate shown, then it decays"


def test_extending_a_step_schedule_says_it_continues(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *DIGITS, "--schedule", "step", "--epochs", "3", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "model.npz"), "--epochs", "4"]) == 0
    assert capsys.readouterr().err == (
        "xpnn: the step schedule continues as planned for 3 epochs: the learning rate (now 1e-06) x0.1 every 1 epoch\n"
    )


# ---- small things -------------------------------------------------------------------------------


def test_a_float64_input_to_a_float32_model_says_how_to_fix_it():
    with pytest.raises(DTypeError) as err:
        nn.Linear(3, 2)(np.zeros((2, 3)))
    assert str(err.value) == (
        "Linear(3, 2): expected dtype float32, got float64; cast the input (x.astype(np.float32) on NumPy, "
        'xp.astype(x, xp.float32) on any backend) or convert the model (model.to(dtype="float64"))'
    )


def test_a_one_epoch_plot_has_one_whole_epoch_tick():
    pytest.importorskip("matplotlib")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from xpnn.train import plot_history

    figure = plot_history({"loss": [0.5], "val_loss": [0.4], "acc": [0.9], "val_acc": [0.92]})
    FigureCanvasAgg(figure).draw()
    assert all(list(ax.get_xticks()) == [1] for ax in figure.axes)
    figure = plot_history({"loss": [0.5, 0.4, 0.3]})
    assert list(figure.axes[0].get_xticks()) == [1, 2, 3]


def test_one_epoch_is_singular(tmp_path, capsys):
    history = History({"loss": [0.5]})
    assert repr(history) == "History(1 epoch: loss)"
    out = tmp_path / "run"
    assert main(["train", *DIGITS, "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "model.npz")]) == 2
    assert "has already completed 1 epoch; pass --epochs N" in capsys.readouterr().err


def test_replanning_a_cosine_sets_the_rate_of_the_run_position():
    """The replanned cosine rate is the closed form at the run's position, whatever the optimizer."""
    from xpnn.cli.recipes import replan

    model = nn.Linear(2, 2)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    schedule = optim.CosineAnnealingLR(optimizer, T_max=10)
    for _ in range(10):
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)
    message = replan(schedule, planned=2, epochs=4, steps_per_epoch=5)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.05) and schedule.T_max == 20
    assert message.endswith("the learning rate goes from 0 to 0.05")


def test_epoch_lines_reach_a_pipe_as_they_are_written(tmp_path):
    """``xpnn train | tee log`` shows each epoch when it ends, not all of them at exit."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen(
        [sys.executable, "-m", "xpnn", "train", *DIGITS, "--epochs", "2", "--out", str(tmp_path / "run")],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=tmp_path,
    )
    try:
        for line in child.stdout:
            if line.startswith("epoch 1/2"):
                assert child.poll() is None, "the first epoch's line arrived only when the run had ended"
                break
        else:
            pytest.fail("no line for epoch 1")
    finally:
        child.communicate(timeout=120)
    assert child.returncode == 0

"""``xpnn train`` and ``xpnn eval`` lose nothing: run folders are never reused silently, a diverged
epoch is never saved as the last good checkpoint, signals and killed writes leave whole files and
no temporaries, checkpoint configs are validated, and the command ends quietly on Ctrl-C during
its imports or on a closed stdout (issue 14)."""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from xpnn import optim
from xpnn.cli import main
from xpnn.models import build_model
from xpnn.train import RunFolder, load_checkpoint, save_checkpoint
from xpnn.train import trainer as trainer_module

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["--dataset", "digits", "--no-progress"]


def _error_line(capsys, *fragments):
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("xpnn: error: ") and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return out


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A 1-epoch digits run, copied by tests that change it."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train", *DIGITS, "--epochs", "1", "--out", str(out)]) == 0
    return out


def _train(out, *extra):
    return main(["train", *DIGITS, "--epochs", "1", "--out", str(out), *extra])


# ---- run folders -------------------------------------------------------------------------------


def test_a_second_run_into_a_folder_with_a_checkpoint_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(out) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    capsys.readouterr()
    assert _train(out, "--lr", "0.01") == 2
    stdout = _error_line(capsys, f"run folder {out} already holds a checkpoint", f"--resume {out / 'model.npz'}", "another --out", "--overwrite")
    assert "epoch" not in stdout
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before

    assert _train(out, "--lr", "0.01", "--overwrite") == 0
    assert load_checkpoint(out / "model.npz").config["lr"] == 0.01


def test_the_default_folder_takes_a_fresh_suffix(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(3):
        assert main(["train", *DIGITS, "--epochs", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["digits-mlp", "digits-mlp-2", "digits-mlp-3"]
    assert "run folder runs/digits-mlp-3" in capsys.readouterr().out


@pytest.mark.parametrize("flag", ["--resume", "--out"])
def test_an_empty_path_is_an_error_not_a_default(tmp_path, monkeypatch, capsys, flag):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *DIGITS, "--epochs", "1", flag, ""]) == 2
    _error_line(capsys, "got '' (an unset shell variable?)")
    assert list(tmp_path.iterdir()) == []


def test_resuming_into_another_runs_folder_is_refused(finished_run, tmp_path, capsys):
    other = tmp_path / "other"
    assert _train(other) == 0
    before = (other / "model.npz").read_bytes()
    capsys.readouterr()
    resumed = finished_run / "model.npz"
    assert main(["train", "--resume", str(resumed), "--epochs", "2", "--out", str(other), "--no-progress"]) == 2
    _error_line(capsys, f"run folder {other} holds another run's checkpoint", f"resuming {resumed} there would replace it")
    assert (other / "model.npz").read_bytes() == before


@pytest.mark.parametrize("name", ["model.npz", "history.json", "curves.png"])
def test_an_output_that_is_a_folder_is_found_before_training(tmp_path, capsys, name):
    out = tmp_path / "run"
    (out / name).mkdir(parents=True)
    assert _train(out, "--overwrite") == 2
    stdout = _error_line(capsys, f"{out / name} is a folder, expected a file")
    assert "epoch" not in stdout


def test_a_fifo_where_the_checkpoint_goes_is_found_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    os.mkfifo(out / "history.json")
    assert _train(out) == 2
    _error_line(capsys, f"{out / 'history.json'} is not a regular file")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self is a folder nobody can create files in")
def test_an_unwritable_folder_is_found_before_training(capsys):
    assert _train("/proc/self") == 2
    stdout = _error_line(capsys, "cannot write to run folder /proc/self")
    assert "epoch 1" not in stdout


def test_a_folder_in_use_by_another_run_is_refused(tmp_path, capsys):
    other_process = RunFolder(tmp_path / "run")
    other_process.claim()
    try:
        assert _train(tmp_path / "run") == 2
        _error_line(capsys, f"run folder {tmp_path / 'run'} is in use by another xpnn process")
    finally:
        other_process.release()
    assert _train(tmp_path / "run") == 0


def test_stale_temporaries_are_removed_once_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    stale = [".model.npz.k3j_x9a2.tmp", ".history.json.abcdefgh.tmp"]
    kept = [".model.npz.keep", ".model.npz.k3j_x9a2.tmp.bak", "notes.tmp"]
    for name in stale + kept:
        (out / name).write_bytes(b"half a file")
    assert _train(out) == 0
    err = capsys.readouterr().err
    assert err == f"xpnn: removed 2 temporary files left in {out} by an interrupted write (.model.npz.k3j_x9a2.tmp, .history.json.abcdefgh.tmp)\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(kept + ["model.npz", "history.json", "curves.png"])


# ---- divergence -------------------------------------------------------------------------------


def _poison_weights_after_epoch(monkeypatch, poisoned_epoch):
    """The training loss stays finite, but a weight is NaN when epoch ``poisoned_epoch`` (1-based) ends."""
    real = trainer_module.Trainer._train_epoch

    def train_epoch(self, loader, epoch, epochs, progress):
        result = real(self, loader, epoch, epochs, progress)
        if epoch + 1 == poisoned_epoch:
            param = next(iter(self.model.parameters()))
            param.data[0, 0] = np.nan
        return result

    monkeypatch.setattr(trainer_module.Trainer, "_train_epoch", train_epoch)


def test_a_diverged_epoch_is_not_saved_and_the_last_good_checkpoint_is_named(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    _poison_weights_after_epoch(monkeypatch, poisoned_epoch=2)
    assert main(["train", *DIGITS, "--epochs", "3", "--out", str(out)]) == 2
    last_step_lr = 1e-3 * (1 + math.cos(math.pi * 45 / 69)) / 2  # cosine over 3 x 23 steps, at the 46th
    _error_line(
        capsys,
        "weight 1.weight is NaN or infinite at the end of epoch 2",
        f"learning rate {last_step_lr:g} at its last step",
        f"the last checkpoint, {out / 'model.npz'} (epoch 1), is intact",
    )
    checkpoint = load_checkpoint(out / "model.npz")
    assert checkpoint.epoch == 1 and all(np.isfinite(a).all() for a in checkpoint.model_state.values())
    assert len(json.loads((out / "history.json").read_text())["loss"]) == 1


def test_a_nan_loss_names_the_step_its_learning_rate_and_what_is_kept(tmp_path, capsys):
    assert main(["train", *DIGITS, "--optimizer", "sgd", "--lr", "1e6", "--schedule", "none", "--epochs", "2", "--out", str(tmp_path / "run")]) == 2
    _error_line(capsys, "non-finite loss", "at epoch 1, step ", "learning rate 1e+06 at that step", "no epoch completed, so no checkpoint was written")


def _with_weight(run, tmp_path, value):
    """A copy of ``run``'s checkpoint whose first weight holds ``value``."""
    checkpoint = load_checkpoint(run / "model.npz")
    model = build_model("mlp", checkpoint.config["image_shape"], checkpoint.config["num_classes"])
    checkpoint.restore(model, rng=False)
    next(iter(model.parameters())).data[0, 0] = value
    path = tmp_path / "bad" / "model.npz"
    path.parent.mkdir()
    save_checkpoint(path, model, epoch=checkpoint.epoch, config=checkpoint.config, history=checkpoint.history)
    return path


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_eval_refuses_a_checkpoint_with_non_finite_weights(finished_run, tmp_path, capsys, value):
    path = _with_weight(finished_run, tmp_path, value)
    assert main(["eval", str(path)]) == 2
    out = _error_line(capsys, f"checkpoint {path} holds a NaN or infinite weight 1.weight", "start a new run with a lower learning rate")
    assert out == ""


def test_resume_refuses_a_checkpoint_with_non_finite_weights(finished_run, tmp_path, capsys):
    path = _with_weight(finished_run, tmp_path, np.nan)
    checkpoint = load_checkpoint(path)
    save_checkpoint(path, *_restored_run(checkpoint), epoch=1, config=checkpoint.config, history=checkpoint.history)
    assert main(["train", "--resume", str(path), "--epochs", "2", "--no-progress"]) == 2
    stdout = _error_line(capsys, "holds a NaN or infinite weight 1.weight")
    assert "now 0" not in stdout and "epoch" not in stdout


def _restored_run(checkpoint):
    """Model, optimizer and scheduler of the kinds 'xpnn train' saves for the default digits run."""
    model = build_model("mlp", checkpoint.config["image_shape"], checkpoint.config["num_classes"])
    checkpoint.restore(model, rng=False)
    optimizer = optim.Adam(model.parameters(), lr=checkpoint.config["lr"])
    return model, optimizer, optim.CosineAnnealingLR(optimizer, T_max=23)


def test_a_rising_loss_warns_and_a_chance_level_run_says_so(tmp_path, capsys):
    assert main(["train", *DIGITS, "--lr", "100", "--epochs", "1", "--out", str(tmp_path / "adam")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("xpnn: warning: the training loss rose from ")
    assert "(epoch 1's mean): training is diverging; the learning rate (100) is probably too high" in err[0]

    assert main(["train", *DIGITS, "--optimizer", "sgd", "--lr", "3", "--epochs", "3", "--out", str(tmp_path / "sgd")]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("xpnn: warning: test accuracy ") and "is at chance level" in err[-1]
    assert "try a lower learning rate than 3" in err[-1]


def test_a_normal_run_gives_no_warning(tmp_path, capsys):
    assert main(["train", *DIGITS, "--epochs", "3", "--out", str(tmp_path / "run")]) == 0
    assert capsys.readouterr().err == ""


# ---- signals ----------------------------------------------------------------------------------


def _signal_during_checkpoint_writes(monkeypatch, *signals):
    """Deliver ``signals`` inside the first checkpoint write, between the start of the file and its entries."""
    real = np.savez
    pending = list(signals)

    def savez(file, **arrays):
        while pending:
            signal.raise_signal(pending.pop(0))
        return real(file, **arrays)

    monkeypatch.setattr(np, "savez", savez)


def test_sigterm_during_a_checkpoint_write_finishes_the_write_then_stops(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    _signal_during_checkpoint_writes(monkeypatch, signal.SIGTERM)
    assert main(["train", *DIGITS, "--epochs", "3", "--out", str(out)]) == 143
    err = capsys.readouterr().err
    assert err == f"xpnn: terminated; the last checkpoint, {out / 'model.npz'} (epoch 1), is intact\n"
    assert load_checkpoint(out / "model.npz").epoch == 1
    assert sorted(p.name for p in out.iterdir()) == ["model.npz"]


def test_a_second_ctrl_c_during_a_checkpoint_write_rolls_it_back(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    _signal_during_checkpoint_writes(monkeypatch, signal.SIGINT, signal.SIGINT)
    assert main(["train", *DIGITS, "--epochs", "3", "--out", str(out)]) == 130
    assert capsys.readouterr().err == "xpnn: interrupted; no epoch completed, so no checkpoint was written\n"
    assert list(out.iterdir()) == []


def _python(code, **kwargs):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, timeout=120, **kwargs)


def test_ctrl_c_while_the_command_imports_its_modules_is_quiet():
    run = _python(
        """
        import builtins, sys
        real_import = builtins.__import__

        def interrupted_import(name, *args, **kwargs):
            if name == "numpy":
                raise KeyboardInterrupt
            return real_import(name, *args, **kwargs)

        builtins.__import__ = interrupted_import
        from xpnn.__main__ import main
        sys.exit(main(["info"]))
        """,
        capture_output=True,
        text=True,
    )
    assert (run.returncode, run.stdout, run.stderr) == (130, "", "xpnn: interrupted\n")


def test_a_closed_stdout_ends_the_command_quietly():
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    child = subprocess.Popen([sys.executable, "-m", "xpnn", "info"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    child.stdout.close()  # like `xpnn info | head -0`: the reader is gone before the first write
    _, err = child.communicate(timeout=120)
    assert (child.returncode, err) == (141, b"")


# ---- checkpoint configs are input ---------------------------------------------------------------


@pytest.mark.parametrize(
    "key, value, expected",
    [
        ("image_shape", "abc", "[channels, height, width] of positive integers"),
        ("image_shape", [1, 100000, 100000], "at most 67108864 values in all"),
        ("image_shape", [1, 0, 8], "[channels, height, width] of positive integers"),
        ("lr", -1, "expected a finite number > 0"),
        ("lr", "fast", "expected a finite number > 0"),
        ("seed", -1, "expected an integer from 0 to"),
        ("epochs", 1e300, "expected an integer from 1 to 1000000"),
        ("batch_size", True, "expected an integer from 1 to"),
        ("optimizer", "lbfgs", "expected one of sgd, adam, adamw"),
        ("schedule", "cyclic", "expected one of cosine, step, none"),
        ("model", ["mlp"], "expected one of mlp, cnn, lenet"),
        ("num_classes", 0, "expected an integer from 1 to"),
        ("classes", ["a", "b"], "names 2 classes, expected num_classes = 10"),
    ],
)
def test_a_checkpoint_config_outside_its_schema_is_refused(finished_run, tmp_path, capsys, key, value, expected):
    checkpoint = load_checkpoint(finished_run / "model.npz")
    config = dict(checkpoint.config, **{key: value})
    path = tmp_path / "edited" / "model.npz"
    path.parent.mkdir()
    save_checkpoint(path, *_restored_run(checkpoint), epoch=1, config=config, history=checkpoint.history)
    for argv in (["train", "--resume", str(path), "--epochs", "2", "--no-progress"], ["eval", str(path)]):
        assert main(argv) == 2
        _error_line(capsys, f"checkpoint {path}", f"its config {key} is" if key != "classes" else "", expected)


# ---- datasets that cannot train a model ---------------------------------------------------------


def test_a_dataset_a_model_cannot_take_is_named_with_what_the_model_needs(tmp_path, capsys, monkeypatch):
    import xpnn.data
    from xpnn.data.datasets import Dataset

    def tiny_images(name, train=True, root=None, download=True):
        images = np.zeros((8, 1, 1), dtype=np.uint8)
        return Dataset("digits", "train" if train else "test", images, np.arange(8) % 2, ("0", "1"))

    monkeypatch.setattr(xpnn.data, "load_dataset", tiny_images)
    assert main(["train", *DIGITS, "--model", "lenet", "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    _error_line(capsys, "dataset digits (1x1x1 images, 2 classes) cannot train model lenet: LeNet needs images of at least 2x2 pixels")
    assert not (tmp_path / "run").exists()

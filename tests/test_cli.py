"""The ``xpnn`` command, in process (``xpnn.cli.main``) and once as ``python -m xpnn``: train, eval,
info, resume, and one line on stderr with exit status 2 for every user error."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn import cli
from xpnn.cli import main
from xpnn.data import DATASETS
from xpnn.models import MLP, MODELS
from xpnn.train import load_checkpoint, save_checkpoint
from xpnn.train import trainer as trainer_module

ROOT = Path(__file__).resolve().parents[1]
DIGITS = ["--dataset", "digits", "--no-progress"]


def _has_cuda():
    return any(d.startswith("cuda") for d in xb.available())


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One 2-epoch digits run shared by the eval and resume tests."""
    out = tmp_path_factory.mktemp("digits-run")
    assert main(["train", *DIGITS, "--epochs", "2", "--out", str(out)]) == 0
    return out


def _one_error_line(capsys, *fragments):
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("xpnn: error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0]
    return out


def test_train_writes_checkpoint_history_and_curves(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *DIGITS, "--epochs", "1", "--out", str(out)]) == 0
    stdout, stderr = capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "history.json", "model.npz"]
    history = json.loads((out / "history.json").read_text())
    assert {k: len(v) for k, v in history.items()} == {"loss": 1, "acc": 1, "val_loss": 1, "val_acc": 1, "epoch_time": 1, "lr": 1}
    assert "validation = the 360-image test split" in stdout
    assert "epoch 1/1  loss" in stdout and str(out / "model.npz") in stdout and str(out / "curves.png") in stdout
    assert stderr == ""
    ckpt = load_checkpoint(out / "model.npz")
    assert ckpt.epoch == 1
    assert ckpt.config["model"] == "mlp" and ckpt.config["dataset"] == "digits" and ckpt.config["image_shape"] == [1, 8, 8]
    assert ckpt.config["optimizer"] == "adam" and ckpt.config["lr"] == 1e-3 and ckpt.config["batch_size"] == 64
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_json_prints_one_object(digits_run, capsys):
    assert main(["eval", str(digits_run / "model.npz"), "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert err == "" and len(out.strip().splitlines()) == 1
    history = json.loads((digits_run / "history.json").read_text())
    assert result["accuracy"] == pytest.approx(history["val_acc"][-1])
    assert result["loss"] == pytest.approx(history["val_loss"][-1], rel=1e-5)
    cm = np.array(result["confusion_matrix"])
    assert cm.shape == (10, 10) and cm.sum() == 360 and np.trace(cm) / 360 == pytest.approx(result["accuracy"])


def test_eval_text(digits_run, capsys):
    assert main(["eval", str(digits_run / "model.npz")]) == 0
    out = capsys.readouterr().out
    assert "mlp trained 2 epochs on digits" in out and "accuracy" in out
    assert "confusion matrix" in out and out.splitlines()[-1].startswith("9 ")


def test_info(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for fragment in ("xpnn 0.1.0", "numpy ", "array-api-compat ", "cupy ", "devices: cpu"):
        assert fragment in out


def _interrupt_at_second_evaluate(monkeypatch):
    """Ctrl-C during epoch 2 (its validation), after epoch 1's checkpoint was written."""
    real = trainer_module.Trainer.evaluate
    calls = []

    def evaluate_then_interrupt(self, loader):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, loader)

    monkeypatch.setattr(trainer_module.Trainer, "evaluate", evaluate_then_interrupt)


def test_interrupt_then_resume_is_bit_for_bit(digits_run, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    with monkeypatch.context() as patch:
        _interrupt_at_second_evaluate(patch)
        assert main(["train", *DIGITS, "--epochs", "2", "--out", str(out)]) == 130
    err = capsys.readouterr().err
    assert err.strip() == f"xpnn: interrupted; the last checkpoint, {out / 'model.npz'} (epoch 1), is intact"
    assert load_checkpoint(out / "model.npz").epoch == 1
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "model.npz"]

    assert main(["train", "--resume", str(out / "model.npz"), "--no-progress"]) == 0
    assert "resuming at epoch 2" in capsys.readouterr().out
    resumed, full = load_checkpoint(out / "model.npz"), load_checkpoint(digits_run / "model.npz")
    assert resumed.epoch == 2 and resumed.history["loss"] == full.history["loss"]
    for name, value in full.model_state.items():
        np.testing.assert_array_equal(resumed.model_state[name], value, err_msg=name)
    assert json.loads((out / "history.json").read_text())["loss"] == full.history["loss"]


def test_interrupt_before_the_first_checkpoint(tmp_path, capsys, monkeypatch):
    def interrupt(self, loader):
        raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module.Trainer, "evaluate", interrupt)
    assert main(["train", *DIGITS, "--epochs", "2", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err == "xpnn: interrupted; no epoch completed, so no checkpoint was written\n"


def _mismatched_checkpoint(path):
    """A checkpoint whose config says 'mlp' (hidden 256) but whose weights are of another MLP."""
    config = {"model": "mlp", "dataset": "digits", "image_shape": [1, 8, 8], "num_classes": 10}
    save_checkpoint(path, MLP([64, 32, 10]), config=config)
    return path


@pytest.mark.parametrize(
    "argv, fragments",
    [
        (["train", "--model", "resnet"], ["argument --model: invalid choice: 'resnet'", "'mlp', 'cnn', 'lenet'"]),
        (["train", "--dataset", "cifar"], ["argument --dataset: invalid choice: 'cifar'", "'mnist', 'fashion-mnist', 'kmnist', 'digits'"]),
        (["train", "--optimizer", "lbfgs"], ["argument --optimizer: invalid choice: 'lbfgs'", "'sgd', 'adam', 'adamw'"]),
        (["train", "--schedule", "cyclic"], ["argument --schedule: invalid choice: 'cyclic'", "'cosine', 'step', 'none'"]),
        (["train", "--epochs", "0"], ["argument --epochs: expected a positive integer, got '0'"]),
        (["train", "--lr", "-1"], ["argument --lr: expected a positive number"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
        ([], ["the following arguments are required"]),
        (["eval", "{tmp}/missing.npz"], ["checkpoint", "missing.npz does not exist"]),
        (["eval", "{tmp}/corrupt.npz"], ["corrupt.npz: it is not an .npz (zip) archive"]),
        (["eval", "{tmp}/mismatched.npz"], ["(a 'mlp' model) does not fit this MLP", "1.weight has shape (32, 64) in the checkpoint but (256, 64)"]),
        (["train", *DIGITS, "--optimizer", "sgd", "--lr", "1e6", "--out", "{tmp}/nan"], ["non-finite loss", "at epoch 1, step "]),
        (["train", *DIGITS, "--out", "{tmp}/corrupt.npz/run"], ["{tmp}/corrupt.npz"]),
        (["train", "--resume", "{tmp}/mismatched.npz"], ["was not written by 'xpnn train'"]),
    ],
)
def test_user_errors_are_one_line_with_status_2(tmp_path, capsys, argv, fragments):
    (tmp_path / "corrupt.npz").write_bytes(b"definitely not a zip file")
    _mismatched_checkpoint(tmp_path / "mismatched.npz")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    _one_error_line(capsys, *(f.replace("{tmp}", str(tmp_path)) for f in fragments))


def test_model_and_dataset_choices_come_from_the_registries(monkeypatch):
    monkeypatch.setitem(MODELS, "tiny", MODELS["mlp"])
    monkeypatch.setitem(DATASETS, "toy", DATASETS["digits"])
    args = cli.build_parser().parse_args(["train", "--model", "tiny", "--dataset", "toy"])
    assert (args.model, args.dataset) == ("tiny", "toy")


def test_every_registered_model_has_training_defaults():
    assert set(cli.MODEL_DEFAULTS) == set(MODELS)


def test_each_optimizer_and_schedule_choice_builds_its_object():
    params = list(MLP([4, 2]).parameters())
    built = {name: make(params, 0.1) for name, make in cli.OPTIMIZERS.items()}
    assert {name: type(opt).__name__ for name, opt in built.items()} == {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW"}
    assert built["sgd"].param_groups[0]["momentum"] == 0.9
    opt = built["sgd"]
    assert cli.SCHEDULES["cosine"](opt, 6, 10).T_max == 60
    assert cli.SCHEDULES["step"](opt, 6, 10).step_size == 20
    assert cli.SCHEDULES["none"](opt, 6, 10) is None


def test_resume_conflicts_and_finished_runs_are_errors(digits_run, capsys):
    ckpt = str(digits_run / "model.npz")
    assert main(["train", "--resume", ckpt, "--model", "cnn"]) == 2
    _one_error_line(capsys, "--model cnn conflicts with checkpoint", "trained with --model mlp; drop --model to resume it")
    assert main(["train", "--resume", ckpt]) == 2
    _one_error_line(capsys, "has already completed 2 epochs; pass --epochs N with N > 2")


@pytest.mark.skipif(_has_cuda(), reason="a GPU is present")
def test_cuda_without_cupy_gives_the_install_hint(tmp_path, capsys):
    assert main(["train", *DIGITS, "--device", "cuda", "--out", str(tmp_path / "run")]) == 2
    _one_error_line(capsys, "device 'cuda' needs", "pip install 'xpnn[cuda12]'")
    assert not (tmp_path / "run").exists()


def test_python_dash_m_xpnn(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    run = subprocess.run(
        [sys.executable, "-m", "xpnn", "train", *DIGITS, "--epochs", "1", "--out", str(tmp_path / "run")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run" / "model.npz").exists() and "test accuracy" in run.stdout
    run = subprocess.run(
        [sys.executable, "-m", "xpnn", "eval", str(tmp_path / "run" / "missing.npz")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("xpnn: error: checkpoint ") and "Traceback" not in run.stderr


def test_real_mnist_one_epoch(mnist_dir, tmp_path, capsys):
    out = tmp_path / "mnist"
    assert main(["train", "--dataset", "mnist", "--data-dir", str(mnist_dir), "--epochs", "1", "--out", str(out), "--no-progress"]) == 0
    history = json.loads((out / "history.json").read_text())
    assert history["val_acc"][0] > 0.95
    assert "60000 training images, validation = the 10000-image test split" in capsys.readouterr().out


def test_train_without_matplotlib_skips_the_curves(tmp_path, capsys, monkeypatch):
    import xpnn.cli.train

    real = xpnn.cli.train.importlib.util.find_spec
    monkeypatch.setattr(xpnn.cli.train.importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    out = tmp_path / "run"
    assert main(["train", *DIGITS, "--epochs", "1", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["history.json", "model.npz"]
    assert capsys.readouterr().err == "xpnn: matplotlib is not installed, so no curves.png; pip install 'xpnn[plot]'\n"

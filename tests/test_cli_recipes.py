"""The training recipe options of ``xpnn train`` (issue 17): weight decay on weights only, label
smoothing, device augmentation switched on for CIFAR, the warm-up + cosine schedule, and older
checkpoints (written before these settings existed) resuming as they were trained."""

import math

import numpy as np
import pytest
from data_helpers import isolated_env, small_cifar, write_cifar  # noqa: F401 (isolated_env is a fixture)

from xpnn import cli, optim
from xpnn.cli import main
from xpnn.models import LeNet, build_model
from xpnn.train import Trainer, load_checkpoint, save_checkpoint

DIGITS = ["--dataset", "digits", "--no-progress"]


def _error(capsys, *fragments):
    err = capsys.readouterr().err
    assert err.startswith("xpnn: error: ") and err.count("\n") == 1, err
    for fragment in fragments:
        assert fragment in err, err


def test_weight_decay_groups_decay_weights_and_spare_biases_and_norms():
    model = LeNet(1, (28, 28), 10)
    groups = optim.weight_decay_groups(model, 5e-4)
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    assert all(len(p.shape) > 1 for p in groups[0]["params"]) and all(len(p.shape) == 1 for p in groups[1]["params"])
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))
    assert optim.weight_decay_groups(model, None) == list(model.parameters())
    assert [g["weight_decay"] for g in optim.weight_decay_groups(build_model("mlp", (1, 8, 8), 10), 0.0)] == [0.0, 0.0]


def test_weight_decay_and_label_smoothing_are_run_settings(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *DIGITS, "--epochs", "1", "--weight-decay", "5e-4", "--label-smoothing", "0.1", "--out", str(out)]) == 0
    checkpoint = load_checkpoint(out / "model.npz")
    assert (checkpoint.config["weight_decay"], checkpoint.config["label_smoothing"], checkpoint.config["augment"]) == (5e-4, 0.1, False)
    groups = checkpoint.optimizer_state["param_groups"]
    assert [g["weight_decay"] for g in groups] == [5e-4, 0.0]
    plain = tmp_path / "plain"
    assert main(["train", *DIGITS, "--epochs", "1", "--weight-decay", "5e-4", "--out", str(plain)]) == 0
    smoothed, sharp = (load_checkpoint(p / "model.npz").history["loss"][0] for p in (out, plain))
    assert smoothed > sharp, "label smoothing keeps the loss away from zero"
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "model.npz"), "--epochs", "2", "--weight-decay", "0.001"]) == 2
    _error(capsys, "--weight-decay 0.001 conflicts with checkpoint", "trained with --weight-decay 0.0005; drop --weight-decay to resume it")


@pytest.mark.parametrize("argv, message", [
    (["--weight-decay", "-1"], "argument --weight-decay: expected a number >= 0, got '-1'"),
    (["--label-smoothing", "1"], "argument --label-smoothing: expected a number in [0, 1), got '1'"),
    (["--augment"], "--augment: no augmentation is defined for digits (only for cifar10, cifar100); drop --augment"),
])
def test_bad_recipe_options_are_one_line_errors(tmp_path, capsys, argv, message):
    assert main(["train", *DIGITS, "--epochs", "1", "--out", str(tmp_path / "run"), *argv]) == 2
    _error(capsys, message)


def test_cifar_trains_with_augmentation_by_default_and_resumes_bit_for_bit(isolated_env, monkeypatch, capsys):
    info = small_cifar(monkeypatch, "cifar10", train=100, test=20)
    write_cifar(isolated_env / "data" / "cifar10", info)
    common = ["--dataset", "cifar10", "--data-dir", str(isolated_env / "data"), "--model", "mlp", "--batch-size", "16", "--no-progress"]
    full, part = isolated_env / "full", isolated_env / "part"
    assert main(["train", *common, "--epochs", "2", "--out", str(full)]) == 0
    assert load_checkpoint(full / "model.npz").config["augment"] is True
    real_evaluate, calls = Trainer.evaluate, []

    def interrupt_in_epoch_2(self, data, batch_size=None):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_evaluate(self, data, batch_size)

    with monkeypatch.context() as patch:
        patch.setattr(Trainer, "evaluate", interrupt_in_epoch_2)
        assert main(["train", *common, "--epochs", "2", "--out", str(part)]) == 130
    assert main(["train", "--resume", str(part / "model.npz"), "--no-progress"]) == 0
    a, b = load_checkpoint(full / "model.npz"), load_checkpoint(part / "model.npz")
    assert a.history["loss"] == b.history["loss"]
    for name, value in a.model_state.items():
        np.testing.assert_array_equal(b.model_state[name], value, err_msg=name)
    capsys.readouterr()
    assert main(["eval", str(full / "model.npz")]) == 0
    assert "test split: 20 images" in capsys.readouterr().out

    off = isolated_env / "off"
    assert main(["train", *common, "--epochs", "2", "--no-augment", "--out", str(off)]) == 0
    assert load_checkpoint(off / "model.npz").config["augment"] is False
    assert load_checkpoint(off / "model.npz").history["loss"][0] != a.history["loss"][0], "same seed and schedule: only the augmentation differs"


def test_warmup_cosine_rises_from_a_tenth_then_decays_to_zero():
    model = build_model("mlp", (1, 8, 8), 10)
    optimizer = optim.SGD(model.parameters(), lr=0.1)
    schedule = cli.SCHEDULES["warmup-cosine"](optimizer, epochs=4, steps_per_epoch=10)
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        schedule.step()
    assert rates[0] == pytest.approx(0.01) and rates[4] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(rates[:4], rates[1:5])) and all(a >= b for a, b in zip(rates[4:], rates[5:]))
    assert rates[4 + 18] == pytest.approx(0.1 * (1 + math.cos(math.pi * 18 / 36)) / 2)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_a_checkpoint_from_before_the_recipe_settings_resumes_as_it_was_trained(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *DIGITS, "--epochs", "1", "--out", str(out)]) == 0
    checkpoint = load_checkpoint(out / "model.npz")
    model = build_model("mlp", (1, 8, 8), 10)
    optimizer = cli.OPTIMIZERS["adam"](model.parameters(), 1e-3)
    schedule = cli.SCHEDULES["cosine"](optimizer, 1, 23)
    checkpoint.restore(model, optimizer, schedule, rng=False)
    old = {key: value for key, value in checkpoint.config.items() if key not in ("weight_decay", "label_smoothing", "augment", "clip_grad_norm")}
    save_checkpoint(out / "model.npz", model, optimizer, schedule, epoch=1, config=old, history=checkpoint.history)
    capsys.readouterr()
    assert main(["train", "--resume", str(out / "model.npz"), "--epochs", "2", "--no-progress"]) == 0
    resumed = load_checkpoint(out / "model.npz").config
    assert (resumed["weight_decay"], resumed["label_smoothing"], resumed["augment"]) == (None, 0.0, False)


def test_resnet20_trains_on_a_cifar10_archive_then_resumes_and_evaluates(isolated_env, monkeypatch, capsys):
    """The issue's command on a synthetic archive in the official layout: train, resume, eval, curves."""
    info = small_cifar(monkeypatch, "cifar10", train=40, test=10)
    write_cifar(isolated_env / "data", info)
    out = isolated_env / "run"
    argv = ["train", "--dataset", "cifar10", "--model", "resnet20", "--data-dir", str(isolated_env / "data"), "--batch-size", "8", "--no-progress"]
    assert main([*argv, "--epochs", "1", "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "resnet20 (269,722 parameters) on cifar10: 40 training images" in stdout and "sgd lr 0.1" in stdout
    checkpoint = load_checkpoint(out / "model.npz")
    assert checkpoint.config["augment"] is True and checkpoint.config["weight_decay"] == 5e-4 and checkpoint.config["image_shape"] == [3, 32, 32]
    assert sorted(p.name for p in out.iterdir()) == ["curves.png", "history.json", "model.npz"]
    assert main(["train", "--resume", str(out / "model.npz"), "--epochs", "2", "--no-progress"]) == 0
    assert load_checkpoint(out / "model.npz").epoch == 2
    capsys.readouterr()
    assert main(["eval", str(out / "model.npz"), "--json"]) == 0
    assert '"samples": 10' in capsys.readouterr().out

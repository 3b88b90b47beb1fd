"""MultiStepLR, ExponentialLR, OneCycleLR (with momentum cycling), SequentialLR and
ReduceLROnPlateau (issue 16): learning rates equal to torch.optim.lr_scheduler's over many steps,
state_dict round trips that resume identically, all-or-nothing state checks, bad arguments, the
Trainer's plateau stepping and a checkpoint resume through the CLI's schedule table."""

import warnings

import numpy as np
import pytest

from xpnn import nn, optim
from xpnn.errors import CheckpointError, ConfigError


def _sgd(lr=0.1, momentum=0.9, groups=1):
    params = [nn.Parameter(np.zeros(1, dtype=np.float32)) for _ in range(groups)]
    return optim.SGD([{"params": [p]} for p in params], lr=lr, momentum=momentum)


def _adam(lr=0.1):
    return optim.Adam([nn.Parameter(np.zeros(1, dtype=np.float32))], lr=lr)


def _momentum(group):
    return group["betas"][0] if "betas" in group else group["momentum"]


def _trace(opt, sched, steps):
    out = []
    for _ in range(steps):
        out.append([(g["lr"], _momentum(g)) for g in opt.param_groups])
        sched.step()
    return np.array(out, dtype=float)


def _torch_trace(opt, sched, steps):
    out = []
    for _ in range(steps):
        out.append([(g["lr"], g["betas"][0] if "betas" in g else g["momentum"]) for g in opt.param_groups])
        opt.step()
        sched.step()
    return np.array(out, dtype=float)


CASES = {
    "multistep": (lambda o: optim.MultiStepLR(o, [60, 20, 20, 90], 0.5), lambda s, o: s.MultiStepLR(o, [60, 20, 20, 90], 0.5), 150),
    "exponential": (lambda o: optim.ExponentialLR(o, 0.98), lambda s, o: s.ExponentialLR(o, 0.98), 300),
    "onecycle": (lambda o: optim.OneCycleLR(o, 0.5, total_steps=200), lambda s, o: s.OneCycleLR(o, 0.5, total_steps=200), 200),
    "onecycle-linear-three-phase": (
        lambda o: optim.OneCycleLR(o, [0.5, 0.2], epochs=9, steps_per_epoch=17, pct_start=0.25, anneal_strategy="linear", three_phase=True,
                                   base_momentum=0.8, max_momentum=[0.9, 0.99], div_factor=10.0, final_div_factor=100.0),
        lambda s, o: s.OneCycleLR(o, [0.5, 0.2], epochs=9, steps_per_epoch=17, pct_start=0.25, anneal_strategy="linear", three_phase=True,
                                  base_momentum=0.8, max_momentum=[0.9, 0.99], div_factor=10.0, final_div_factor=100.0),
        153,
    ),
    "onecycle-no-momentum": (lambda o: optim.OneCycleLR(o, 0.3, total_steps=50, cycle_momentum=False),
                             lambda s, o: s.OneCycleLR(o, 0.3, total_steps=50, cycle_momentum=False), 50),
    "warmup-cosine": (lambda o: optim.SequentialLR(o, [optim.LinearLR(o, 0.1, total_iters=10), optim.CosineAnnealingLR(o, 90)], [10]),
                      lambda s, o: s.SequentialLR(o, [s.LinearLR(o, 0.1, total_iters=10), s.CosineAnnealingLR(o, 90)], [10]), 150),
    "three-in-sequence": (
        lambda o: optim.SequentialLR(o, [optim.LinearLR(o, 0.2, total_iters=5), optim.ExponentialLR(o, 0.9), optim.MultiStepLR(o, [3, 9])], [5, 25]),
        lambda s, o: s.SequentialLR(o, [s.LinearLR(o, 0.2, total_iters=5), s.ExponentialLR(o, 0.9), s.MultiStepLR(o, [3, 9])], [5, 25]),
        60,
    ),
}
TWO_GROUPS = {"onecycle-linear-three-phase"}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
def test_rates_and_momenta_match_torch(case, opt_kind):
    torch = pytest.importorskip("torch")
    ours_make, theirs_make, steps = CASES[case]
    groups = 2 if case in TWO_GROUPS else 1
    if opt_kind == "sgd":
        opt = _sgd(groups=groups)
        topt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(groups)], lr=0.1, momentum=0.9)
    else:
        if groups > 1:
            pytest.skip("two groups are checked with SGD")
        opt = _adam()
        topt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    ours = _trace(opt, ours_make(opt), steps)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _torch_trace(topt, theirs_make(torch.optim.lr_scheduler, topt), steps)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-15)


def test_onecycle_shape_and_end():
    opt = _adam(lr=1.0)
    sched = optim.OneCycleLR(opt, max_lr=1.0, total_steps=100)
    trace = _trace(opt, sched, 100)
    assert trace[0, 0, 0] == pytest.approx(1 / 25) and trace[0, 0, 1] == pytest.approx(0.95)
    assert trace[:, 0, 0].argmax() == 29 and trace[29, 0, 1] == pytest.approx(0.85)
    assert trace[-1, 0, 0] == pytest.approx(1 / 25 / 1e4)
    with pytest.raises(ConfigError, match="OneCycleLR: tried to step 101 times; the schedule has total_steps=100"):
        sched.step()
    assert sched.last_epoch == 100


def test_plateau_matches_torch_in_both_modes():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    metrics = [float(v) for v in 5 * np.exp(-np.arange(120) / 15) + rng.normal(0, 0.05, 120)]
    for kwargs in (dict(patience=3, cooldown=2, factor=0.5, min_lr=0.002), dict(mode="max", threshold_mode="abs", threshold=0.01, patience=1),
                   dict(threshold=0.05, eps=0.05, min_lr=[0.01, 0.001])):
        sign = -1 if kwargs.get("mode") == "max" else 1
        opt = _sgd(lr=1.0, groups=2)
        sched = optim.ReduceLROnPlateau(opt, **kwargs)
        topt = torch.optim.SGD([{"params": [torch.nn.Parameter(torch.zeros(1))]} for _ in range(2)], lr=1.0)
        tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs)
        ours, theirs = [], []
        for m in metrics:
            sched.step(sign * m)
            tsched.step(sign * m)
            ours.append([g["lr"] for g in opt.param_groups])
            theirs.append([g["lr"] for g in topt.param_groups])
        assert ours == theirs, kwargs
        assert len({tuple(r) for r in ours}) > 2


def test_plateau_takes_a_device_scalar(backend):
    opt = _sgd(lr=1.0)
    sched = optim.ReduceLROnPlateau(opt, patience=0)
    sched.step(backend.asarray(np.array(1.0)))
    sched.step(backend.asarray(np.array(2.0)))
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1) and sched.best == 1.0


ROUND_TRIPS = {
    "multistep": lambda o: optim.MultiStepLR(o, [3, 7, 11], 0.3),
    "exponential": lambda o: optim.ExponentialLR(o, 0.9),
    "onecycle": lambda o: optim.OneCycleLR(o, [0.4], total_steps=30, three_phase=True),
    "sequential": lambda o: optim.SequentialLR(o, [optim.LinearLR(o, 0.1, total_iters=4), optim.OneCycleLR(o, 0.2, total_steps=25)], [4]),
}


@pytest.mark.parametrize("case", list(ROUND_TRIPS))
def test_state_dict_round_trip_resumes_identically(case):
    make = ROUND_TRIPS[case]
    opt = _adam()
    full = _trace(opt, make(opt), 28)
    opt = _adam()
    sched = make(opt)
    _trace(opt, sched, 12)
    state, groups = sched.state_dict(), [dict(g) for g in opt.param_groups]
    import json

    state = json.loads(json.dumps(state))  # a checkpoint's metadata is JSON
    fresh_opt = _adam()
    fresh = make(fresh_opt)
    fresh.load_state_dict(state)
    for own, saved in zip(fresh_opt.param_groups, groups):
        own.update({k: v for k, v in saved.items() if k != "params"})
    np.testing.assert_allclose(_trace(fresh_opt, fresh, 16), full[12:], rtol=1e-15)


def test_plateau_state_round_trip_resumes_identically():
    import json

    metrics = [3.0, 2.0, 2.5, 2.6, 2.7, 1.0, 1.5, 1.6, 1.7, 1.8, 0.5, 0.6, 0.7, 0.8]
    opt = _sgd(lr=1.0)
    sched = optim.ReduceLROnPlateau(opt, patience=1, cooldown=1)
    full = []
    for m in metrics:
        sched.step(m)
        full.append(opt.param_groups[0]["lr"])
    opt = _sgd(lr=1.0)
    sched = optim.ReduceLROnPlateau(opt, patience=1, cooldown=1)
    for m in metrics[:6]:
        sched.step(m)
    state = json.loads(json.dumps(sched.state_dict()))
    lr = opt.param_groups[0]["lr"]
    fresh_opt = _sgd(lr=lr)
    fresh = optim.ReduceLROnPlateau(fresh_opt, patience=5)
    fresh.load_state_dict(state)
    resumed = []
    for m in metrics[6:]:
        fresh.step(m)
        resumed.append(fresh_opt.param_groups[0]["lr"])
    assert resumed == full[6:]


@pytest.mark.parametrize("make, edit, message", [
    (ROUND_TRIPS["multistep"], lambda s: s.update(milestones=[1, -2]), r"MultiStepLR.load_state_dict: expected milestones to be a list of ints >= 0, got \[1, -2\]"),
    (ROUND_TRIPS["onecycle"], lambda s: s.update(anneal_strategy="cosine"), "OneCycleLR.load_state_dict: expected anneal_strategy to be 'cos' or 'linear', got 'cosine'"),
    (ROUND_TRIPS["onecycle"], lambda s: s.update(max_lrs=[0.1, 0.2]), r"OneCycleLR.load_state_dict: expected max_lrs to be a finite number >= 0 or a list of 1 such \(one per parameter group\), got \[0.1, 0.2\]"),
    (ROUND_TRIPS["onecycle"], lambda s: s.update(base_momentums=[1.0]), r"OneCycleLR.load_state_dict: expected base_momentums to be a number in \[0, 1\) or a list of 1 such"),
    (ROUND_TRIPS["onecycle"], lambda s: s.pop("total_steps"), r"OneCycleLR.load_state_dict: expected the keys \[.*'total_steps'.*\] of OneCycleLR, got"),
    (ROUND_TRIPS["sequential"], lambda s: s.update(milestones=[0]), r"SequentialLR.load_state_dict: expected milestones to be 1 increasing int\(s\) >= 1"),
    (ROUND_TRIPS["sequential"], lambda s: s["schedulers"][1].update(total_steps=0), "OneCycleLR.load_state_dict: expected total_steps to be an int >= 1, got 0"),
    (ROUND_TRIPS["sequential"], lambda s: s["schedulers"].pop(), "SequentialLR.load_state_dict: expected schedulers to be a list of 2 states"),
    (lambda o: optim.ReduceLROnPlateau(o), lambda s: s.update(best=float("nan")), "ReduceLROnPlateau.load_state_dict: expected best to be a finite number, got nan"),
    (lambda o: optim.ReduceLROnPlateau(o), lambda s: s.update(mode="up"), "ReduceLROnPlateau.load_state_dict: expected mode to be 'min' or 'max', got 'up'"),
    (lambda o: optim.ReduceLROnPlateau(o), lambda s: s.update(num_bad_epochs=-1), "ReduceLROnPlateau.load_state_dict: expected num_bad_epochs to be an int >= 0, got -1"),
    (lambda o: optim.ReduceLROnPlateau(o), lambda s: s.update(min_lrs=[0.0, 0.0]), r"ReduceLROnPlateau.load_state_dict: expected min_lrs to be .* or a list of 1 such"),
])
def test_bad_states_are_refused_and_change_nothing(make, edit, message):
    opt = _adam()
    sched = make(opt)
    state = sched.state_dict()
    import copy

    before = copy.deepcopy(state)
    edit(state)
    with pytest.raises(CheckpointError, match=message):
        sched.load_state_dict(state)
    assert sched.state_dict() == before


@pytest.mark.parametrize("make, message", [
    (lambda o: optim.MultiStepLR(o, [2, 1.5]), r"MultiStepLR: expected milestones to be a list of ints >= 0, got \[2, 1.5\]"),
    (lambda o: optim.MultiStepLR(o, [2], gamma=-1), "MultiStepLR: expected gamma to be a finite number >= 0, got -1"),
    (lambda o: optim.ExponentialLR(o, float("nan")), "ExponentialLR: expected gamma to be a finite number >= 0, got nan"),
    (lambda o: optim.OneCycleLR(o, 0.1), "OneCycleLR: expected total_steps, or epochs and steps_per_epoch; got none of them"),
    (lambda o: optim.OneCycleLR(o, 0.1, epochs=2, steps_per_epoch=0), "OneCycleLR: expected steps_per_epoch to be an int >= 1, got 0"),
    (lambda o: optim.OneCycleLR(o, 0.1, total_steps=0), "OneCycleLR: expected total_steps to be an int >= 1, got 0"),
    (lambda o: optim.OneCycleLR(o, 0.1, total_steps=10, pct_start=1.5), r"OneCycleLR: expected pct_start to be a number in \[0, 1\], got 1.5"),
    (lambda o: optim.OneCycleLR(o, 0.1, total_steps=10, anneal_strategy="exp"), "OneCycleLR: expected anneal_strategy to be 'cos' or 'linear', got 'exp'"),
    (lambda o: optim.OneCycleLR(o, [0.1, 0.2], total_steps=10), r"OneCycleLR: expected max_lr to be a finite number >= 0 or a list of 1 such \(one per parameter group\), got \[0.1, 0.2\]"),
    (lambda o: optim.OneCycleLR(o, 0.1, total_steps=10, max_momentum=1.0), r"OneCycleLR: expected max_momentum to be a number in \[0, 1\)"),
    (lambda o: optim.OneCycleLR(o, 0.1, total_steps=10, div_factor=0), "OneCycleLR: expected div_factor to be a finite number > 0, got 0"),
    (lambda o: optim.OneCycleLR(optim.Adagrad(o.param_groups[0]["params"]), 0.1, total_steps=10),
     "OneCycleLR: cycle_momentum needs an optimizer with momentum or betas, got Adagrad; pass cycle_momentum=False"),
    (lambda o: optim.SequentialLR(o, [optim.ExponentialLR(o, 0.9)], [3]), r"SequentialLR: expected milestones to be 0 increasing int\(s\) >= 1"),
    (lambda o: optim.SequentialLR(o, [optim.ExponentialLR(o, 0.9), optim.StepLR(o, 2)], [3, 5]), r"SequentialLR: expected milestones to be 1 increasing"),
    (lambda o: optim.SequentialLR(o, [], []), r"SequentialLR: expected a non-empty list of schedulers, got \[\]"),
    (lambda o: optim.SequentialLR(o, [optim.ReduceLROnPlateau(o), optim.StepLR(o, 2)], [3]),
     "SequentialLR: expected schedulers that step without a metric, got ReduceLROnPlateau at index 0"),
    (lambda o: optim.SequentialLR(o, [optim.StepLR(o, 2), optim.StepLR(_adam(), 2)], [3]),
     r"SequentialLR: expected every scheduler to belong to the given optimizer, got another one at index 1 \(StepLR\)"),
    (lambda o: optim.ReduceLROnPlateau(o, factor=1.0), r"ReduceLROnPlateau: expected factor to be a number in \[0, 1\), got 1.0"),
    (lambda o: optim.ReduceLROnPlateau(o, mode="up"), "ReduceLROnPlateau: expected mode to be 'min' or 'max', got 'up'"),
    (lambda o: optim.ReduceLROnPlateau(o, threshold_mode="x"), "ReduceLROnPlateau: expected threshold_mode to be 'rel' or 'abs', got 'x'"),
    (lambda o: optim.ReduceLROnPlateau(o, patience=-1), "ReduceLROnPlateau: expected patience to be an int >= 0, got -1"),
    (lambda o: optim.ReduceLROnPlateau(o, min_lr=[0.1, 0.1]), r"ReduceLROnPlateau: expected min_lr to be a finite number >= 0 or a list of 1 such"),
])
def test_bad_arguments_are_rejected_before_anything_changes(make, message):
    opt = _adam()
    groups = [dict(g) for g in opt.param_groups]
    with pytest.raises(ConfigError, match=message):
        make(opt)
    if "SequentialLR" not in message:
        assert [dict(g) for g in opt.param_groups] == groups


# ---- the Trainer and the CLI ---------------------------------------------------------------

def _data(n=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 6)).astype(np.float32)
    return x, (x[:, 0] > 0).astype(np.int64)


def test_trainer_steps_a_plateau_schedule_with_val_loss_else_loss(monkeypatch):
    from xpnn.train import Trainer

    for valid in (True, False):
        model = nn.Sequential(nn.Linear(6, 2))
        opt = optim.SGD(model.parameters(), lr=0.1)
        sched = optim.ReduceLROnPlateau(opt, patience=0)
        seen = []
        original = sched.step
        monkeypatch.setattr(sched, "step", lambda metric: seen.append(float(metric)) or original(metric))
        trainer = Trainer(model, opt, scheduler=sched, verbose=False)
        x, y = _data()
        history = trainer.fit((x, y), epochs=3, valid=(x[:16], y[:16]) if valid else None, batch_size=16)
        expected = history["val_loss"] if valid else history["loss"]
        assert seen == pytest.approx(expected)


def test_trainer_refuses_a_plateau_schedule_stepped_per_step():
    from xpnn.train import Trainer

    model = nn.Sequential(nn.Linear(6, 2))
    opt = optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="Trainer: a ReduceLROnPlateau steps on an epoch's loss; expected scheduler_interval 'epoch', got 'step'"):
        Trainer(model, opt, scheduler=optim.ReduceLROnPlateau(opt), scheduler_interval="step")


@pytest.mark.parametrize("name", ["onecycle", "exponential"])
def test_cli_schedules_span_the_run(name):
    from xpnn import cli
    from xpnn.cli import run_config

    opt = _adam(lr=0.01)
    sched = cli.SCHEDULES[name](opt, 3, 10)
    rates = [opt.param_groups[0]["lr"]]
    for _ in range(30):
        sched.step()
        rates.append(opt.param_groups[0]["lr"])
    if name == "onecycle":
        assert max(rates) == pytest.approx(0.01) and rates[0] == pytest.approx(0.01 / 25) and rates[29] == pytest.approx(0.01 / 25 / 1e4)  # the last step's rate
    else:
        assert rates[0] == 0.01 and rates[-1] == pytest.approx(0.0001)
    assert run_config._run_config_schema()["schedule"][0](name)


@pytest.mark.parametrize("name", ["onecycle", "exponential"])
def test_cli_run_resumes_with_more_epochs(tmp_path, capsys, name):
    from xpnn import cli

    out = tmp_path / "run"
    base = ["train", "--dataset", "digits", "--model", "mlp", "--schedule", name, "--batch-size", "256", "--no-progress", "--out", str(out)]
    assert cli.main([*base, "--epochs", "1", "--clip-grad-norm", "0.5"]) == 0
    assert cli.main(["train", "--resume", str(out / "model.npz"), "--epochs", "2", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert ("one-cycle schedule now spans 2 epochs" if name == "onecycle" else "exponential schedule continues as planned") in err
    from xpnn.train import load_checkpoint

    checkpoint = load_checkpoint(out / "model.npz")
    assert checkpoint.epoch == 2 and checkpoint.config["clip_grad_norm"] == 0.5 and checkpoint.config["schedule"] == name

"""What ``xpnn train`` trains with when the command line does not say: the optimizer and schedule
tables behind --optimizer and --schedule, the defaults and each model's recipe, the names of the
settings a run records, and how a resumed run's schedule is re-spread over a new total of epochs.

Data only, plus the schedule factories and their replanning: the parser reads these tables for its
choices and help, the settings resolution (run_config) for its defaults, the commands to build the
objects."""

from .. import optim
from .text import plural


def _cosine(optimizer, epochs, steps_per_epoch):
    """Cosine decay of the learning rate to zero over the run."""
    return optim.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)


def _step(optimizer, epochs, steps_per_epoch):
    """The learning rate x0.1 after each third of the epochs."""
    return optim.StepLR(optimizer, step_size=max(1, epochs // 3) * steps_per_epoch, gamma=0.1)


def _onecycle(optimizer, epochs, steps_per_epoch):
    """One cycle: the learning rate rises from lr/25 to lr over the first 30% of the steps, then
    anneals to lr/250000; the momentum (or Adam's beta1) cycles between 0.95 and 0.85."""
    return optim.OneCycleLR(optimizer, max_lr=optimizer.param_groups[0]["lr"], total_steps=epochs * steps_per_epoch)


def _exponential(optimizer, epochs, steps_per_epoch):
    """Exponential decay of the learning rate to 1/100 of its start over the run."""
    return optim.ExponentialLR(optimizer, gamma=0.01 ** (1 / (epochs * steps_per_epoch)))


def _warmup_cosine(optimizer, epochs, steps_per_epoch):
    """A linear warm-up from lr/10 over the first epoch (at most a tenth of the run), then cosine
    decay to zero over the rest: the usual recipe for residual networks at lr 0.1."""
    total = epochs * steps_per_epoch
    warm = max(1, min(steps_per_epoch, total // 10))
    warm_up = optim.LinearLR(optimizer, start_factor=0.1, end_factor=1.0, total_iters=warm)
    return optim.SequentialLR(optimizer, [warm_up, optim.CosineAnnealingLR(optimizer, T_max=max(1, total - warm))], milestones=[warm])


def _constant(optimizer, epochs, steps_per_epoch):
    """No scheduler: the learning rate stays as given."""
    return None


OPTIMIZERS = {
    "sgd": lambda params, lr: optim.SGD(params, lr=lr, momentum=0.9, nesterov=True),
    "adam": lambda params, lr: optim.Adam(params, lr=lr),
    "adamw": lambda params, lr: optim.AdamW(params, lr=lr),
}
SCHEDULES = {
    "cosine": _cosine, "step": _step, "none": _constant, "onecycle": _onecycle, "exponential": _exponential, "warmup-cosine": _warmup_cosine,
}
DEFAULTS = {"dataset": "mnist", "model": "mlp", "optimizer": "adam", "seed": 0, "schedule": "cosine"}
# Settings added after the first checkpoints were written: their defaults, which are also what an
# older checkpoint's run used. weight_decay None leaves each optimizer's own default.
LATER_DEFAULTS = {"weight_decay": None, "label_smoothing": 0.0, "augment": None}
# The residual networks' recipe (He et al. 2016, with the usual warm-up): SGD with Nesterov
# momentum 0.9, lr 0.1 warmed up over the first epoch then cosine-decayed, batch 128, weight
# decay 5e-4 on conv/linear weights only.
RESNET_RECIPE = {"batch_size": 128, "lr": 0.1, "optimizer": "sgd", "schedule": "warmup-cosine", "weight_decay": 5e-4}
MODEL_DEFAULTS = {  # one per name in models.MODELS; they reach >= 98% (mlp, 10 epochs) and >= 99% (lenet, 3 epochs) MNIST test accuracy
    "mlp": {"epochs": 10, "batch_size": 64, "lr": 1e-3},
    "cnn": {"epochs": 5, "batch_size": 64, "lr": 1e-3},
    "lenet": {"epochs": 5, "batch_size": 32, "lr": 2e-3},
    "resnet8": {"epochs": 2, **RESNET_RECIPE},  # the small grey residual network, for 28x28 images
    "resnet20": {"epochs": 30, **RESNET_RECIPE},
    "resnet32": {"epochs": 30, **RESNET_RECIPE},
    "resnet56": {"epochs": 30, **RESNET_RECIPE},
}
SETTINGS = (*DEFAULTS, "epochs", "batch_size", "lr")
ALL_SETTINGS = (*SETTINGS, *LATER_DEFAULTS)
EVAL_BATCH = 1000


def _set_rates(optimizer, rates):
    """Put ``rates`` (one per group) into ``optimizer``; returns the first group's old and new rate."""
    old = optimizer.param_groups[0]["lr"]
    for group, rate in zip(optimizer.param_groups, rates):
        group["lr"] = rate
    return old, optimizer.param_groups[0]["lr"]


def replan(scheduler, planned, epochs, steps_per_epoch):
    """A resumed run whose total of epochs differs from the plan: the cosine, warm-up + cosine and
    one-cycle schedules are re-spread over the new total (from where the run is, so the rate moves
    once and then decays smoothly to zero at the new end); the others continue as they were.
    Returns the sentence that says so."""
    lr = scheduler.optimizer.param_groups[0]["lr"] if scheduler is not None else None
    total = epochs * steps_per_epoch
    spread = None
    if isinstance(scheduler, optim.CosineAnnealingLR):
        scheduler.T_max = total
        spread = "the cosine schedule now decays to 0 over", scheduler.get_lr()
    elif isinstance(scheduler, optim.SequentialLR) and isinstance(scheduler.schedulers[-1], optim.CosineAnnealingLR):
        cosine, start = scheduler.schedulers[-1], scheduler.milestones[-1]
        cosine.T_max = max(1, total - start)
        rates = cosine.get_lr() if scheduler.last_epoch >= start else [g["lr"] for g in scheduler.optimizer.param_groups]
        spread = "the warm-up + cosine schedule now decays to 0 over", rates
    elif isinstance(scheduler, optim.OneCycleLR):
        scheduler.total_steps = total
        spread = "the one-cycle schedule now spans", scheduler.get_lr()
    if spread is not None:
        what, rates = spread
        old, new = _set_rates(scheduler.optimizer, rates)
        return f"{what} {plural(epochs, 'epoch')} (planned: {planned}); the learning rate goes from {old:g} to {new:g}"
    if isinstance(scheduler, optim.ExponentialLR):
        return f"the exponential schedule continues as planned for {planned} epochs: the learning rate (now {lr:g}) x{scheduler.gamma:.6g} every step"
    if isinstance(scheduler, optim.StepLR):
        every = scheduler.step_size // steps_per_epoch
        return f"the step schedule continues as planned for {planned} epochs: the learning rate (now {lr:g}) x{scheduler.gamma:g} every {plural(every, 'epoch')}"
    return f"training to epoch {epochs} (planned: {planned}) at a constant learning rate ({lr:g})"

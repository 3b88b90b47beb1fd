"""Learning-rate schedules (StepLR, MultiStepLR, ExponentialLR, CosineAnnealingLR, LinearLR
warm-up, OneCycleLR) in closed form, stepped once per epoch (or per step, as the caller chooses);
SequentialLR runs one after another; ReduceLROnPlateau steps on a metric. PyTorch's names and
semantics; PyTorch's learning rates to round-off."""

import bisect
import math
import sys

from ..errors import CheckpointError, ConfigError
from .optimizer import RULES, check_values


class LRScheduler:
    """Sets each parameter group's ``lr`` to ``get_lr()`` of the current ``last_epoch``.

    Subclasses name their arguments' rules in ``hyper`` (keys of ``optimizer.RULES``); they are
    checked at construction and, with ``last_epoch`` and ``base_lrs``, when a state is loaded.
    """

    hyper = {}

    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = optimizer
        check_values(type(self).__name__, {**self.hyper, "last_epoch": "epoch"}, {**vars(self), "last_epoch": last_epoch})
        self._check_arguments(type(self).__name__, vars(self), ConfigError)
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def _check_arguments(self, where, values, error):
        """Checks beyond ``hyper``'s rules (lists per parameter group, ...): raise ``error``."""

    def factor(self, epoch):
        """Multiplier of the base learning rate at ``epoch``."""
        raise NotImplementedError

    def get_lr(self):
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]

    def step(self):
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr

    def get_last_lr(self):
        return [group["lr"] for group in self.optimizer.param_groups]

    def state_dict(self):
        return {k: v for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        """Restore a state saved by ``state_dict``, all or nothing (``check_state_dict`` first)."""
        self.check_state_dict(state_dict)
        self.__dict__.update({k: list(v) if k == "base_lrs" else v for k, v in state_dict.items()})

    def check_state_dict(self, state_dict):
        """Raise a CheckpointError unless ``state_dict`` is a state of this kind of schedule: its
        keys exactly, ``last_epoch`` an int >= -1, one base learning rate >= 0 per parameter
        group, and the schedule's arguments within their rules."""
        where = f"{type(self).__name__}.load_state_dict"
        expected = sorted(self.state_dict())
        if not isinstance(state_dict, dict) or sorted(map(str, state_dict)) != expected:
            found = sorted(map(str, state_dict)) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise CheckpointError(f"{where}: expected the keys {expected} of {type(self).__name__}, got {found}")
        base_lrs = state_dict["base_lrs"]
        groups = len(self.optimizer.param_groups)
        description, test = RULES["non_negative"]
        if not isinstance(base_lrs, (list, tuple)) or len(base_lrs) != groups or not all(map(test, base_lrs)):
            raise CheckpointError(f"{where}: expected base_lrs to be {groups} value(s), each {description}, got {base_lrs!r}")
        check_values(where, {**self.hyper, "last_epoch": "epoch"}, state_dict, CheckpointError)
        self._check_arguments(where, state_dict, CheckpointError)


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (epoch // step_size)."""

    hyper = {"step_size": "count", "gamma": "non_negative"}

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch):
        return self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * epoch / T_max)) / 2."""

    hyper = {"T_max": "positive", "eta_min": "non_negative"}

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        cosine = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2
        return [self.eta_min + (base - self.eta_min) * cosine for base in self.base_lrs]


class LinearLR(LRScheduler):
    """Linear warm-up: the factor goes from ``start_factor`` to ``end_factor`` over ``total_iters``
    steps, then stays at ``end_factor``."""

    hyper = {"start_factor": "fraction", "end_factor": "unit", "total_iters": "iterations"}

    def __init__(self, optimizer, start_factor=1 / 3, end_factor=1.0, total_iters=5, last_epoch=-1):
        self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch):
        progress = min(epoch, self.total_iters) / self.total_iters if self.total_iters else 1.0
        return self.start_factor + (self.end_factor - self.start_factor) * progress


def _per_group(where, name, value, groups, rule, error):
    """``value`` (one number, or a list/tuple of one per parameter group) as a list of ``groups``
    numbers, each within ``rule`` (a key of ``RULES``)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value] * groups
    description, test = RULES[rule]
    if len(values) != groups or not all(map(test, values)):
        raise error(f"{where}: expected {name} to be {description} or a list of {groups} such (one per parameter group), got {value!r}")
    return values


class MultiStepLR(LRScheduler):
    """lr = base_lr * gamma ** (the number of milestones <= epoch).

    Args:
        optimizer: the optimizer whose groups' ``lr`` this sets.
        milestones: epochs (ints >= 0) at which the rate is multiplied by ``gamma``; any order,
            repeats count twice.
        gamma: the factor (default 0.1).
        last_epoch: the epoch to continue from (default -1: start).
    """

    hyper = {"milestones": "milestones", "gamma": "non_negative"}

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones = sorted(milestones) if RULES["milestones"][1](milestones) else milestones
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch):
        return self.gamma ** bisect.bisect_right(self.milestones, epoch)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.milestones = sorted(self.milestones)


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** epoch.

    Args:
        optimizer: the optimizer whose groups' ``lr`` this sets.
        gamma: the factor per epoch (or per step, when stepped every step).
        last_epoch: the epoch to continue from (default -1: start).
    """

    hyper = {"gamma": "non_negative"}

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def factor(self, epoch):
        return self.gamma**epoch


class OneCycleLR(LRScheduler):
    """The 1cycle policy (Smith & Topin), stepped after every batch: the rate rises from
    ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of the steps, then falls to
    ``max_lr / div_factor / final_div_factor`` (``three_phase``: back to the start first, then to
    the minimum), by cosine or linear annealing; the momentum (``momentum``, or ``betas[0]`` for
    Adam-like optimizers) cycles the other way between ``max_momentum`` and ``base_momentum``.

    Args:
        optimizer: the optimizer whose groups' ``lr`` (and momentum) this sets.
        max_lr: the peak rate, one number or one per parameter group.
        total_steps: the steps of the cycle; else ``epochs * steps_per_epoch``.
        epochs, steps_per_epoch: ints >= 1, used when ``total_steps`` is None.
        pct_start: the fraction of the steps spent rising (default 0.3).
        anneal_strategy: "cos" (default) or "linear".
        cycle_momentum: cycle the momentum too (default True; needs an optimizer with
            ``momentum`` or ``betas``).
        base_momentum, max_momentum: the momentum's range (default 0.85, 0.95), one number or
            one per group.
        div_factor: initial rate = max_lr / div_factor (default 25).
        final_div_factor: minimum rate = initial rate / final_div_factor (default 1e4).
        three_phase: rise, fall back to the initial rate, then anneal to the minimum (default False).
        last_epoch: the step to continue from (default -1: start).

    Stepping more than ``total_steps`` times is a ConfigError, as PyTorch's ValueError. Unlike
    PyTorch, the per-group rates and momenta live in the schedule (and its ``state_dict``), not in
    the optimizer's parameter groups (which get ``initial_lr`` only).
    """

    hyper = {"total_steps": "count", "pct_start": "unit", "anneal_strategy": "anneal", "cycle_momentum": "flag",
             "div_factor": "positive", "final_div_factor": "positive", "three_phase": "flag", "use_beta1": "flag"}

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3, anneal_strategy="cos",
                 cycle_momentum=True, base_momentum=0.85, max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False,
                 last_epoch=-1):
        name = type(self).__name__
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ConfigError(f"{name}: expected total_steps, or epochs and steps_per_epoch; got none of them")
            check_values(name, {"epochs": "count", "steps_per_epoch": "count"}, {"epochs": epochs, "steps_per_epoch": steps_per_epoch})
            total_steps = epochs * steps_per_epoch
        groups = len(optimizer.param_groups)
        self.total_steps, self.pct_start, self.anneal_strategy = total_steps, pct_start, anneal_strategy
        self.cycle_momentum, self.three_phase = cycle_momentum, three_phase
        self.div_factor, self.final_div_factor = div_factor, final_div_factor
        self.use_beta1 = "betas" in optimizer.defaults
        check_values(name, {**self.hyper, "last_epoch": "epoch"}, {**vars(self), "last_epoch": last_epoch})
        self.max_lrs = _per_group(name, "max_lr", max_lr, groups, "non_negative", ConfigError)
        if cycle_momentum and not self.use_beta1 and "momentum" not in optimizer.defaults:
            raise ConfigError(
                f"{name}: cycle_momentum needs an optimizer with momentum or betas, got {type(optimizer).__name__}; pass cycle_momentum=False"
            )
        self.base_momentums = _per_group(name, "base_momentum", base_momentum, groups, "below_one", ConfigError)
        self.max_momentums = _per_group(name, "max_momentum", max_momentum, groups, "below_one", ConfigError)
        if last_epoch == -1:
            for group, peak in zip(optimizer.param_groups, self.max_lrs):
                group["initial_lr"] = peak / div_factor
        super().__init__(optimizer, last_epoch)

    def _check_arguments(self, where, values, error):
        groups = len(self.optimizer.param_groups)
        for key, rule in (("max_lrs", "non_negative"), ("base_momentums", "below_one"), ("max_momentums", "below_one")):
            _per_group(where, key, values[key] if isinstance(values[key], (list, tuple)) else None, groups, rule, error)

    def _phases(self):
        """(end step, start key, end key) of each phase; keys index ``_points``."""
        total, pct = self.total_steps, self.pct_start
        if self.three_phase:
            return [(float(pct * total) - 1, "initial", "max"), (float(2 * pct * total) - 2, "max", "initial"), (total - 1, "initial", "min")]
        return [(float(pct * total) - 1, "initial", "max"), (total - 1, "max", "min")]

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _at(self, step, points):
        """The annealed value at ``step`` between a group's ``points`` (a dict of the keys)."""
        start_step = 0.0
        phases = self._phases()
        for i, (end_step, start, end) in enumerate(phases):
            if step <= end_step or i == len(phases) - 1:
                pct = (step - start_step) / (end_step - start_step) if end_step != start_step else 1.0
                return self._anneal(points[start], points[end], pct)
            start_step = end_step

    def get_lr(self):
        return [
            self._at(self.last_epoch, {"initial": peak / self.div_factor, "max": peak, "min": peak / self.div_factor / self.final_div_factor})
            for peak in self.max_lrs
        ]

    def _momenta(self):
        # The momentum runs opposite to the rate: high where the rate is low.
        return [self._at(self.last_epoch, {"initial": high, "max": low, "min": high}) for low, high in zip(self.base_momentums, self.max_momentums)]

    def step(self):
        if self.last_epoch + 1 > self.total_steps:
            raise ConfigError(f"{type(self).__name__}: tried to step {self.last_epoch + 1} times; the schedule has total_steps={self.total_steps}")
        super().step()
        if self.cycle_momentum:
            for group, momentum in zip(self.optimizer.param_groups, self._momenta()):
                if self.use_beta1:
                    group["betas"] = (momentum, *group["betas"][1:])
                else:
                    group["momentum"] = momentum


class SequentialLR(LRScheduler):
    """Runs ``schedulers`` one after another, switching at each of ``milestones`` (e.g. a LinearLR
    warm-up, then a CosineAnnealingLR): PyTorch's rules, so a schedule restarts at its own epoch 0
    at its milestone.

    Args:
        optimizer: the optimizer all the schedulers set.
        schedulers: the schedules, built on ``optimizer`` (not ReduceLROnPlateau).
        milestones: ``len(schedulers) - 1`` increasing ints >= 1, the steps at which the next
            schedule takes over.
        last_epoch: the epoch to continue from (default -1: start).
    """

    def __init__(self, optimizer, schedulers, milestones, last_epoch=-1):
        name = type(self).__name__
        schedulers = list(schedulers) if isinstance(schedulers, (list, tuple)) else schedulers
        if not isinstance(schedulers, list) or not schedulers:
            raise ConfigError(f"{name}: expected a non-empty list of schedulers, got {schedulers!r}")
        for i, scheduler in enumerate(schedulers):
            if not isinstance(scheduler, LRScheduler) or isinstance(scheduler, (ReduceLROnPlateau, SequentialLR)):
                raise ConfigError(f"{name}: expected schedulers that step without a metric, got {type(scheduler).__name__} at index {i}")
            if scheduler.optimizer is not optimizer:
                raise ConfigError(f"{name}: expected every scheduler to belong to the given optimizer, got another one at index {i} ({type(scheduler).__name__})")
        self.optimizer, self._schedulers = optimizer, schedulers
        self._check_milestones(name, milestones, ConfigError)
        check_values(name, {"last_epoch": "epoch"}, {"last_epoch": last_epoch})
        self.milestones = list(milestones)
        self.last_epoch = last_epoch + 1
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"]
        for scheduler in schedulers:  # undo the step each made when it was built
            scheduler.last_epoch -= 1
        schedulers[bisect.bisect_right(self.milestones, 0)].step()

    @property
    def schedulers(self):
        """The schedules, in the order they run."""
        return list(self._schedulers)

    def _check_milestones(self, where, milestones, error):
        count = len(self._schedulers) - 1
        fits = (RULES["milestones"][1](milestones) and len(milestones) == count and all(m >= 1 for m in milestones)
                and all(a < b for a, b in zip(milestones, milestones[1:])))
        if not fits:
            raise error(f"{where}: expected milestones to be {count} increasing int(s) >= 1 (one fewer than the schedulers), got {milestones!r}")

    def step(self):
        self.last_epoch += 1
        index = bisect.bisect_right(self.milestones, self.last_epoch)
        scheduler = self._schedulers[index]
        if index > 0 and self.milestones[index - 1] == self.last_epoch:
            scheduler.last_epoch = -1  # its own epoch 0
        scheduler.step()

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "milestones": list(self.milestones), "schedulers": [s.state_dict() for s in self._schedulers]}

    def check_state_dict(self, state_dict):
        """Raise a CheckpointError unless ``state_dict`` is a state of this SequentialLR: its keys,
        ``last_epoch``, the milestones, and each schedule's own state (``check_state_dict``)."""
        where = f"{type(self).__name__}.load_state_dict"
        expected = sorted(self.state_dict())
        if not isinstance(state_dict, dict) or sorted(map(str, state_dict)) != expected:
            found = sorted(map(str, state_dict)) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise CheckpointError(f"{where}: expected the keys {expected} of {type(self).__name__}, got {found}")
        check_values(where, {"last_epoch": "epoch"}, state_dict, CheckpointError)
        self._check_milestones(where, state_dict["milestones"], CheckpointError)
        states = state_dict["schedulers"]
        if not isinstance(states, (list, tuple)) or len(states) != len(self._schedulers):
            raise CheckpointError(f"{where}: expected schedulers to be a list of {len(self._schedulers)} states, got {states!r}")
        for scheduler, state in zip(self._schedulers, states):
            scheduler.check_state_dict(state)

    def load_state_dict(self, state_dict):
        """Restore a state saved by ``state_dict``, all or nothing (``check_state_dict`` first)."""
        self.check_state_dict(state_dict)
        self.last_epoch, self.milestones = state_dict["last_epoch"], list(state_dict["milestones"])
        for scheduler, state in zip(self._schedulers, state_dict["schedulers"]):
            scheduler.load_state_dict(state)


class ReduceLROnPlateau(LRScheduler):
    """Multiply the rates by ``factor`` when a metric has stopped improving for ``patience``
    epochs: ``step(metric)`` once per epoch, with the validation loss (say). PyTorch's rules.

    Args:
        optimizer: the optimizer whose groups' ``lr`` this sets.
        mode: "min" (default: lower is better) or "max".
        factor: the factor, in [0, 1) (default 0.1).
        patience: epochs without improvement tolerated before a reduction (default 10).
        threshold: how much better counts as an improvement (default 1e-4).
        threshold_mode: "rel" (default: ``best * (1 -+ threshold)``) or "abs" (``best -+ threshold``).
        cooldown: epochs after a reduction before bad epochs count again (default 0).
        min_lr: lowest rate, one number or one per parameter group (default 0).
        eps: a reduction smaller than this is skipped (default 1e-8).

    ``best`` starts at the worst finite number (PyTorch: infinity), so the state stays finite
    JSON; every finite metric improves on it. ``step(metric)`` reads a device scalar back to the
    host (once per epoch).
    """

    hyper = {"mode": "mode", "factor": "below_one", "patience": "iterations", "threshold": "non_negative",
             "threshold_mode": "threshold_mode", "cooldown": "iterations", "eps": "non_negative"}

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4, threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8):
        name = type(self).__name__
        self.optimizer = optimizer
        self.mode, self.factor, self.patience, self.threshold = mode, factor, patience, threshold
        self.threshold_mode, self.cooldown, self.eps = threshold_mode, cooldown, eps
        check_values(name, self.hyper, vars(self))
        self.min_lrs = _per_group(name, "min_lr", min_lr, len(optimizer.param_groups), "non_negative", ConfigError)
        self.last_epoch = 0
        self.best = self._worse()
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _worse(self):
        return sys.float_info.max if self.mode == "min" else -sys.float_info.max

    def _is_better(self, a, best):
        if self.threshold_mode == "rel":
            return a < best * (1.0 - self.threshold) if self.mode == "min" else a > best * (self.threshold + 1.0)
        return a < best - self.threshold if self.mode == "min" else a > best + self.threshold

    def step(self, metrics):
        """Record this epoch's ``metrics`` (a number or 0-d array) and reduce the rates if it is
        the ``patience + 1``-th epoch in a row without improvement (outside a cooldown)."""
        current = float(metrics)
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            for group, low in zip(self.optimizer.param_groups, self.min_lrs):
                old = float(group["lr"])
                new = max(old * self.factor, low)
                if old - new > self.eps:
                    group["lr"] = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def check_state_dict(self, state_dict):
        """Raise a CheckpointError unless ``state_dict`` is a state of this kind of schedule: its
        keys exactly, the arguments within their rules, one ``min_lr`` per group, the counters
        ints >= 0 and ``best`` a finite number."""
        where = f"{type(self).__name__}.load_state_dict"
        expected = sorted(self.state_dict())
        if not isinstance(state_dict, dict) or sorted(map(str, state_dict)) != expected:
            found = sorted(map(str, state_dict)) if isinstance(state_dict, dict) else type(state_dict).__name__
            raise CheckpointError(f"{where}: expected the keys {expected} of {type(self).__name__}, got {found}")
        counters = {"last_epoch": "iterations", "num_bad_epochs": "iterations", "cooldown_counter": "iterations", "best": "number"}
        check_values(where, {**self.hyper, **counters}, state_dict, CheckpointError)
        min_lrs = state_dict["min_lrs"]
        _per_group(where, "min_lrs", min_lrs if isinstance(min_lrs, (list, tuple)) else None, len(self.optimizer.param_groups), "non_negative", CheckpointError)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.min_lrs = list(self.min_lrs)

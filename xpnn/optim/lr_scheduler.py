"""Learning-rate schedules (StepLR, CosineAnnealingLR, LinearLR warm-up) in closed form, stepped
once per epoch (or per step, as the caller chooses), with PyTorch's names and semantics."""

import math

from ..errors import CheckpointError
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
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

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

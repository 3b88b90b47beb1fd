"""Optimizers and learning-rate schedules with torch.optim's names, defaults and update rules."""

from . import lr_scheduler
from .adadelta import Adadelta
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .groups import weight_decay_groups
from .lr_scheduler import (
    CosineAnnealingLR, ExponentialLR, LinearLR, LRScheduler, MultiStepLR, OneCycleLR, ReduceLROnPlateau, SequentialLR, StepLR,
)
from .nadam import NAdam
from .optimizer import Optimizer
from .radam import RAdam
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "lr_scheduler", "LRScheduler", "StepLR", "CosineAnnealingLR", "LinearLR",
           "Adadelta", "Adagrad", "NAdam", "RAdam", "MultiStepLR", "ExponentialLR", "OneCycleLR", "ReduceLROnPlateau", "SequentialLR",
           "weight_decay_groups"]

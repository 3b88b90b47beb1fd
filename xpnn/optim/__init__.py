"""Optimizers and learning-rate schedules with torch.optim's names, defaults and update rules."""

from . import lr_scheduler
from .adam import Adam, AdamW
from .lr_scheduler import CosineAnnealingLR, LinearLR, LRScheduler, StepLR
from .optimizer import Optimizer
from .rmsprop import RMSprop
from .sgd import SGD

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "lr_scheduler", "LRScheduler", "StepLR", "CosineAnnealingLR", "LinearLR"]

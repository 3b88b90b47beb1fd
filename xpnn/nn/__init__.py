"""Layers, losses and the Module/Parameter machinery."""

from . import init
from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .dropout import Dropout, Dropout2d
from .flatten import Flatten
from .linear import Identity, Linear
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from .module import Module, Sequential
from .parameter import Parameter

__all__ = [
    "init", "Module", "Sequential", "Parameter",
    "Linear", "Identity", "Flatten", "Dropout", "Dropout2d",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax",
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss", "BCELoss",
]

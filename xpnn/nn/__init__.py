"""Layers, losses and the Module/Parameter machinery."""

from . import init, utils
from .architecture import check_config, from_config, get_config, register, registered
from .activation import GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh
from .activation import ELU, Hardswish, Hardtanh, Mish, PReLU, ReLU6, SiLU, Softplus, Softsign
from .batchnorm import BatchNorm1d, BatchNorm2d
from .containers import ModuleDict, ModuleList, Parallel, Residual
from .conv import Conv1d, Conv2d, ConvTranspose2d
from .dropout import Dropout, Dropout2d
from .embedding import Embedding
from .flatten import Flatten
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .linear import Identity, Linear
from .loss import BCELoss, BCEWithLogitsLoss, CrossEntropyLoss, MSELoss, NLLLoss
from .loss import HuberLoss, KLDivLoss, L1Loss, SmoothL1Loss
from .module import Module, Sequential
from .normalization import GroupNorm, LayerNorm
from .parameter import Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool1d, AvgPool2d, MaxPool1d, MaxPool2d
from .summary import ModelSummary, summary
from .upsample import Upsample

# xpnn's own layers, losses and containers are buildable from a config (xpnn.models registers the
# models): nn.from_config looks classes up in this registry only, never by import path.
for _cls in (
    Sequential, Linear, Identity, Flatten, Dropout, Dropout2d, ReLU, LeakyReLU, Sigmoid, Tanh, GELU, Softmax, LogSoftmax,
    CrossEntropyLoss, NLLLoss, MSELoss, BCEWithLogitsLoss, BCELoss,
    Conv2d, MaxPool2d, AvgPool2d, AdaptiveAvgPool2d, BatchNorm1d, BatchNorm2d,
    ELU, SiLU, Softplus, Hardswish, Mish, Hardtanh, ReLU6, Softsign, PReLU,
    L1Loss, SmoothL1Loss, HuberLoss, KLDivLoss,
    Conv1d, ConvTranspose2d, MaxPool1d, AvgPool1d,
    Residual, Parallel, ModuleList, ModuleDict,
    LayerNorm, GroupNorm, Embedding, Upsample,
):
    register(_cls)
del _cls

__all__ = [
    "init", "utils", "Module", "Sequential", "Parameter",
    "Linear", "Identity", "Flatten", "Dropout", "Dropout2d",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax",
    "CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss", "BCELoss",
    "Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d", "BatchNorm1d", "BatchNorm2d",
    "ELU", "SiLU", "Softplus", "Hardswish", "Mish", "Hardtanh", "ReLU6", "Softsign", "PReLU",
    "L1Loss", "SmoothL1Loss", "HuberLoss", "KLDivLoss",
    "Conv1d", "ConvTranspose2d", "MaxPool1d", "AvgPool1d",
    "Residual", "Parallel", "ModuleList", "ModuleDict",
    "LayerNorm", "GroupNorm", "Embedding", "Upsample",
    "register", "registered", "get_config", "from_config", "check_config",
    "no_grad", "enable_grad", "set_grad_enabled", "is_grad_enabled", "summary", "ModelSummary",
]

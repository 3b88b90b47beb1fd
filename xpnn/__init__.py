"""xpnn: neural networks with explicit forward/backward, written once against the Array API and
run on NumPy (CPU) or CuPy (CUDA)."""

from . import backend, functional, nn, optim
from . import data, models, train
from .train import Trainer, plot_history
from .errors import XpnnError
from .random import manual_seed

__version__ = "0.1.0"

__all__ = ["backend", "functional", "nn", "optim", "XpnnError", "manual_seed", "__version__"]
__all__ += ["data", "models", "train", "Trainer", "plot_history"]

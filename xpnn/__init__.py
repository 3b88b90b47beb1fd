"""xpnn: neural networks with explicit forward/backward, written once against the Array API and
run on NumPy (CPU) or CuPy (CUDA).

The subpackages and the names below load on first use (PEP 562), so ``import xpnn`` costs almost
nothing and the ``xpnn`` command can turn a Ctrl-C during its imports into a quiet exit.
"""

import importlib

__version__ = "0.1.0"

_SUBMODULES = ("backend", "functional", "nn", "optim", "data", "models", "train", "onnx", "threads")
_NAMES = {"Trainer": "train", "plot_history": "train", "XpnnError": "errors", "manual_seed": "random",
          "no_grad": "nn", "enable_grad": "nn", "set_grad_enabled": "nn", "is_grad_enabled": "nn", "summary": "nn",
          "gradcheck": "gradient_check", "GradcheckError": "gradient_check",
          "set_num_threads": "threads", "get_num_threads": "threads",
          "load": "train.checkpoint", "save": "train.checkpoint", "load_torch_state_dict": "interop"}

__all__ = [*_SUBMODULES, *_NAMES, "__version__"]


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _NAMES:
        value = getattr(importlib.import_module(f".{_NAMES[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'xpnn' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))

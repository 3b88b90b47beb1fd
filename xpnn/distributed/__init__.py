"""Data-parallel training: communicators over MPI (mpi4py) and NCCL (CuPy), launch detection
and per-rank thread limits (``launch``), and the Trainer's step synchronisation (``data_parallel``).

``Trainer(model, optimizer, distributed=True)`` under ``mpiexec -n N`` is the usual way in; this
package is loaded lazily, so that ``xpnn.distributed.launch`` can run before NumPy is imported.
"""

from .launch import launch_environment, limit_threads

_LAZY = {
    "Communicator": "comm", "SingleProcess": "comm", "MPICommunicator": "comm", "NCCLCommunicator": "comm",
    "get_communicator": "comm", "KINDS": "comm", "DataParallel": "data_parallel",
}

__all__ = ["launch_environment", "limit_threads", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'xpnn.distributed' has no attribute {name!r}")

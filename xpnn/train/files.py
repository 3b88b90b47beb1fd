"""The atomic writers under their former name, ``xpnn.train.files``, for code that still imports
them from here (the benchmark); they live in :mod:`xpnn.files`."""

from ..files import atomic_write, write_json

__all__ = ["atomic_write", "write_json"]

"""Elementwise arithmetic that keeps the memory order layers hand on: one door, :func:`add`.

Conv2d's output and input gradient are NCHW views of batch-last (C, H, W, N) memory, and the
layers that follow read that order in place. NumPy's ``a + b`` of two arrays in different memory
orders, or of a view with gaps (a cropped padded gradient), returns a C-ordered (NCHW) array, and
every layer after it then copies or walks it with strides. Path: on NumPy the sum is written into
an array laid out like ``a`` (``empty_like``: its axis order, gaps closed); elsewhere ``a + b``."""

import numpy as np

from .. import backend


def add(a, b):
    """``a + b`` as a new array (never in place: either may be a view another layer keeps), laid
    out in ``a``'s memory order on NumPy."""
    if backend.fast_path(backend.namespace_of(a)) != "numba" or not isinstance(b, np.ndarray) or a.shape != b.shape:
        return a + b
    return np.add(a, b, out=np.empty_like(a, dtype=np.result_type(a, b)))

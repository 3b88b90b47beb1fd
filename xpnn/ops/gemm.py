"""Matrix products split over xpnn's threads (``xpnn.threads``).

Door: ``matmul(a, b)`` is ``a @ b``. On NumPy with more than one xpnn thread, when the product
has at least ``SPLIT_MIN_MACS`` multiply-adds, each thread multiplies one piece with NumPy's
(then single-threaded) BLAS: a range of the stacked matrices when both operands are 3-D stacks of
the same length, at least one per thread; else a range of the output's rows or columns, whichever
is longer, when it gives each thread at least ``SPLIT_MIN_SIDE``; else a range of the inner
dimension, whose partial products are then added in order. Every other namespace, a 1-D operand,
and one thread, is the plain product."""

import math

import numpy as np

from .. import threads

# Below this many multiply-adds a product runs whole on the calling thread: handing pieces to
# the pool costs some tens of microseconds (bench/threads.py).
SPLIT_MIN_MACS = 1 << 22
# Rows or columns per thread below which the inner dimension is split instead.
SPLIT_MIN_SIDE = 16


def matmul(a, b, out=None):
    """``a @ b`` for (..., M, K) and (..., K, N) arrays, written into ``out`` when given (NumPy)."""
    count = threads.get_num_threads()
    if count == 1 or not (isinstance(a, np.ndarray) and isinstance(b, np.ndarray)) or a.ndim < 2 or b.ndim < 2:
        return a @ b if out is None else np.matmul(a, b, out=out)
    m, k, n = a.shape[-2], a.shape[-1], b.shape[-1]
    batch_shape = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    batch = math.prod(batch_shape)
    if batch * m * n * k < SPLIT_MIN_MACS:
        return a @ b if out is None else np.matmul(a, b, out=out)
    if out is None:
        out = np.empty((*batch_shape, m, n), dtype=np.result_type(a, b))
    if a.ndim == b.ndim == 3 and a.shape[0] == b.shape[0] == batch >= count:
        threads.run(lambda s, e: np.matmul(a[s:e], b[s:e], out=out[s:e]), threads.ranges(batch))
    elif max(m, n) >= count * SPLIT_MIN_SIDE:
        if m >= n:
            threads.run(lambda s, e: np.matmul(a[..., s:e, :], b, out=out[..., s:e, :]), threads.ranges(m))
        else:
            threads.run(lambda s, e: np.matmul(a, b[..., s:e], out=out[..., s:e]), threads.ranges(n))
    else:
        parts = threads.run(lambda s, e: np.matmul(a[..., s:e], b[..., s:e, :]), threads.ranges(k))
        out[...] = parts[0]
        for part in parts[1:]:
            out += part
    return out

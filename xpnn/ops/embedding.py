"""Embedding lookups: one door, :func:`embedding`, returning the looked-up rows and the backward
that turns their gradient into the table's (a scatter-add of gradient rows into table rows).

Paths: the lookup is one ``take`` everywhere. The weight gradient is one compiled pass over the
lookups on NumPy (``xpnn.kernels.numba_embedding``, float32 and float64); elsewhere (CuPy,
array_api_strict, float16) the portable version sorts the lookups, takes a running sum of the
sorted gradient rows (in float64) and reads each table row's sum as the difference of the
running sum at the ends of its run of lookups (``searchsorted``): standard Array API calls only,
no scatter, no host sync, exact to float64 round-off of the running sums.

Indices out of [0, num_embeddings) are an error on NumPy, whose arrays are in host memory
(:func:`check_indices`, like the class-label check of ``CrossEntropyLoss``); on a device reading
them back would stall every step, so there such a lookup gives a NaN row instead (which a loss
downstream turns into a NaN loss, reported by the training loop's non-finite check) and adds
nothing to the weight gradient."""

from .. import backend
from ..errors import ConfigError


def check_indices(name, indices, num_embeddings):
    """Raise a ConfigError naming the first index outside [0, num_embeddings), where checking is
    free: on NumPy. Elsewhere out-of-range lookups give NaN rows (see the module docstring)."""
    xp = backend.namespace_of(indices)
    if backend.fast_path(xp) != "numba" or indices.size == 0:
        return
    low, high = int(xp.min(indices)), int(xp.max(indices))
    if low < 0 or high >= num_embeddings:
        raise ConfigError(f"{name}: expected indices in [0, {num_embeddings - 1}], got {low if low < 0 else high}")


def embedding(weight, indices, padding_idx=None, scale_grad_by_freq=False):
    """``(rows, backward)``: ``rows`` the (*indices.shape, D) rows of the (V, D) ``weight``
    that the integer ``indices`` name, and ``backward(grad)`` the (V, D) weight gradient for
    ``grad`` of the rows' shape: the sum of the gradient rows of each table row's lookups, zero
    for ``padding_idx`` (a row in [0, V) or None); with ``scale_grad_by_freq`` each table row's
    sum is divided by its number of lookups. NumPy callers check the range first
    (:func:`check_indices`)."""
    xp = backend.namespace_of(weight)
    num, dim = weight.shape
    shape = tuple(indices.shape)
    flat = xp.reshape(xp.astype(indices, xp.int64, copy=False), (-1,))
    path = backend.fast_path(xp)
    if path == "numba":
        rows = xp.take(weight, flat, axis=0)
    else:
        valid = (flat >= 0) & (flat < num)
        rows = xp.take(weight, xp.clip(flat, 0, num - 1), axis=0)
        rows = xp.where(xp.reshape(valid, (-1, 1)), rows, float("nan"))
    pad = -1 if padding_idx is None else int(padding_idx)
    compiled = path == "numba" and backend.kernel_dtype(weight)

    def backward(grad):
        grad = xp.reshape(grad, (-1, dim))
        if compiled:
            return embedding_backward_numba(flat, grad, num, pad, scale_grad_by_freq)
        return embedding_backward_portable(flat, grad, num, pad, scale_grad_by_freq)

    return xp.reshape(rows, shape + (dim,)), backward


def embedding_backward_numba(indices, grad, num_embeddings, padding_idx=-1, scale_grad_by_freq=False):
    """One compiled pass over the lookups (NumPy; indices in range)."""
    from ..kernels import numba_embedding

    return numba_embedding.embedding_backward(backend.c_contiguous(indices), backend.c_contiguous(grad), num_embeddings, padding_idx, scale_grad_by_freq)


def embedding_backward_portable(indices, grad, num_embeddings, padding_idx=-1, scale_grad_by_freq=False):
    """The (V, D) weight gradient of int64 ``indices`` (M,) and ``grad`` (M, D) in Array API calls:
    sort, running sum (float64), difference at each table row's run ends. Indices outside
    [0, V) fall in no row's run and add nothing."""
    xp = backend.namespace_of(grad)
    place = backend.device_of(grad)
    accumulate = getattr(xp, "float64", grad.dtype)
    order = xp.argsort(indices, stable=True)
    ordered = xp.take(indices, order)
    running = xp.cumulative_sum(xp.astype(xp.take(grad, order, axis=0), accumulate), axis=0, include_initial=True)
    table = xp.arange(num_embeddings, dtype=xp.int64, device=place)
    start = xp.searchsorted(ordered, table, side="left")
    end = xp.searchsorted(ordered, table, side="right")
    out = xp.take(running, end, axis=0) - xp.take(running, start, axis=0)
    if scale_grad_by_freq:
        out = out / xp.reshape(xp.astype(xp.maximum(end - start, 1), accumulate), (-1, 1))
    if padding_idx >= 0:
        out = out * xp.reshape(xp.astype(table != padding_idx, accumulate), (-1, 1))
    return xp.astype(out, grad.dtype)

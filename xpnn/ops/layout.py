"""Elementwise arithmetic that keeps the memory order layers hand on: doors :func:`add` and
:func:`empty_ordered`; and new zero-filled arrays written by xpnn's threads (:func:`padded`,
:func:`zeros`).

Conv2d's output and input gradient are NCHW views of batch-last (C, H, W, N) memory, and the
layers that follow read that order in place. NumPy's ``a + b`` of two arrays in different memory
orders, or of a view with gaps (a cropped padded gradient), returns a C-ordered (NCHW) array, and
every layer after it then copies or walks it with strides. Path: on NumPy the sum is written into
an array laid out like ``a`` (``empty_like``: its axis order, gaps closed); elsewhere ``a + b``.
A layer that makes a new array of another shape (ResNet's zero-padding shortcut) takes it from
:func:`empty_ordered`, in its input's axis order, for the same reason."""

import numpy as np

from .. import backend, threads


def memory_order(a):
    """``a``'s axes from the outermost in memory (largest stride) to the innermost on NumPy, so
    ``permute_dims(a, memory_order(a))`` walks its memory in order; ``0, 1, ...`` elsewhere."""
    if backend.fast_path(backend.namespace_of(a)) != "numba":
        return tuple(range(a.ndim))
    return tuple(sorted(range(a.ndim), key=lambda axis: -a.strides[axis]))


def in_memory_order_of(like, make, shape):
    """``make(memory_shape)``, a new C-contiguous array of ``shape`` with its axes permuted to
    ``like``'s memory order, viewed back as ``shape``: an array laid out like ``like``."""
    xp = backend.namespace_of(like)
    order = memory_order(like)
    return xp.permute_dims(make(tuple(shape[axis] for axis in order)), tuple(int(k) for k in np.argsort(order)))


def empty_ordered(like, shape):
    """An uninitialised array of ``shape`` and ``like``'s dtype and device, its axes in memory in
    the order of ``like``'s strides (largest first) on NumPy; C order elsewhere."""
    xp = backend.namespace_of(like)
    if like.ndim != len(shape):
        return xp.empty(shape, dtype=like.dtype, device=backend.device_of(like))
    return in_memory_order_of(like, lambda memory: xp.empty(memory, dtype=like.dtype, device=backend.device_of(like)), shape)


def padded(source, shape, offset):
    """A new C-contiguous array of ``shape`` holding ``source`` at ``offset`` (one start per axis;
    the leading axis whole) and zeros around it: a zero-padded image. On NumPy each of xpnn's
    threads writes a range of the leading axis, zeroing only the border; elsewhere zeros, then
    the copy."""
    xp = backend.namespace_of(source)
    region = tuple(slice(start, start + size) for start, size in zip(offset, source.shape))
    if backend.fast_path(xp) != "numba":
        out = xp.zeros(shape, dtype=source.dtype, device=backend.device_of(source))
        out[region] = source
        return out
    out = np.empty(shape, dtype=source.dtype)

    def piece(first, stop):
        block = out[first:stop]
        for axis in range(1, len(shape)):  # the slabs before and after the source along each axis
            for band in (slice(0, region[axis].start), slice(region[axis].stop, shape[axis])):
                block[(slice(None),) * axis + (band,)] = 0
        block[(slice(None),) + region[1:]] = source[first:stop]

    threads.run(piece, threads.spans(shape[0], out[0].size if shape[0] else 0))
    return out


def zeros(shape, like):
    """Zeros of ``shape`` and ``like``'s dtype and device; on NumPy with several xpnn threads,
    each fills a range of the leading axis."""
    xp = backend.namespace_of(like)
    if backend.fast_path(xp) != "numba" or threads.get_num_threads() == 1:
        return xp.zeros(shape, dtype=like.dtype, device=backend.device_of(like))
    out = np.empty(shape, dtype=like.dtype)
    threads.run(lambda first, stop: out[first:stop].fill(0), threads.spans(shape[0], out[0].size if shape[0] else 0))
    return out


def add(a, b):
    """``a + b`` as a new array (never in place: either may be a view another layer keeps), laid
    out in ``a``'s memory order on NumPy."""
    if backend.fast_path(backend.namespace_of(a)) != "numba" or not isinstance(b, np.ndarray) or a.shape != b.shape:
        return a + b
    out = np.empty_like(a, dtype=np.result_type(a, b))
    if a.ndim == 0:
        return np.add(a, b, out=out)
    axis = memory_order(out)[0]  # the outermost in memory: pieces are whole blocks
    inner = out.size // max(out.shape[axis], 1)

    def piece(start, stop):
        index = (slice(None),) * axis + (slice(start, stop),)
        np.add(a[index], b[index], out=out[index])

    threads.run(piece, threads.spans(out.shape[axis], inner))  # NumPy's add releases the GIL
    return out

"""Dropout's mask and product: one door, :func:`dropout`, returning the output and its backward.

Paths: on NumPy one compiled pass compares the uniform draws with ``p``, writes a uint8 keep mask
and the scaled product, and one pass multiplies the gradient backward
(``xpnn.kernels.numba_elementwise``; arrays of at least ``NUMBA_MIN_ELEMENTS``); otherwise, and
for float16 or draws laid out unlike the input, the portable comparison, a scaled 0/1 mask and a
multiply. Both compute each element as ``x * m`` with ``m`` the kept scale ``1/(1-p)`` or 0 in
the input's dtype, so their results are equal bit for bit (a NaN input stays NaN even where
dropped, as in the portable multiply)."""

from .. import backend

# On NumPy, arrays of fewer elements take the portable path: below about 100,000 elements the
# compiled passes' fixed cost per call outweighs what they save (bench/compiled_threshold.py).
NUMBA_MIN_ELEMENTS = 1 << 17


def dropout(x, uniform, p):
    """``(x * mask, backward)`` for a keep mask ``uniform >= p`` scaled by ``1/(1-p)``:
    ``uniform`` holds [0, 1) draws of ``x``'s shape, or of a shape that broadcasts to it
    (Dropout2d's one per channel); ``backward(grad)`` multiplies by the same mask."""
    numba = backend.fast_path(backend.namespace_of(x)) == "numba" and backend.kernel_dtype(x) and x.size >= NUMBA_MIN_ELEMENTS
    if numba and uniform.shape == x.shape and uniform.strides == x.strides and backend.flat_in_memory_order(x) is not None:
        return dropout_numba(x, uniform, p)
    return dropout_portable(x, uniform, p)


def dropout_portable(x, uniform, p):
    """:func:`dropout` in Array API calls: the 0/1 mask times the scale, then a multiply."""
    xp = backend.namespace_of(x)
    mask = xp.astype(uniform >= p, x.dtype) * (1 / (1 - p))

    def backward(grad):
        return grad * mask

    return x * mask, backward


def dropout_numba(x, uniform, p):
    """:func:`dropout` on NumPy: the product and a uint8 keep mask in one compiled pass, the
    gradient's product in another."""
    from ..kernels import numba_elementwise

    y, keep = numba_elementwise.dropout(x, uniform, p)

    def backward(grad):
        return numba_elementwise.dropout_backward(grad, keep, p, x.dtype)

    return y, backward

"""Parameter: a trainable array and the gradient that backward passes accumulate into."""

from .. import backend


class Parameter:
    """Holds ``data`` and a same-shaped ``grad`` (zeros until a backward pass adds to it in place)."""

    __slots__ = ("data", "grad")

    def __init__(self, data):
        self.data = data
        self.grad = backend.namespace_of(data).zeros_like(data)

    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self):
        n = 1
        for d in self.data.shape:
            n *= d
        return n

    def zero_grad(self):
        """Reset the gradient to zero in place, keeping the same buffer."""
        self.grad[...] = 0

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={backend.dtype_name(self.dtype)})"

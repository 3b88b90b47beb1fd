"""Parameter: a trainable array and the gradient that backward passes accumulate into."""

from .. import backend


class Parameter:
    """A trainable array: ``data`` and the same-shaped ``grad`` that backward passes add to.

    Assigned as a Module attribute it is registered (``parameters()``, ``state_dict()``).
    ``zero_grad`` only marks the gradient zero: the next ``accumulate_grad`` takes its array as
    the gradient instead of adding it to a zero-filled buffer (PyTorch's ``set_to_none``
    saving), and reading ``grad`` while marked fills it with zeros first.

    Args:
        data: the array, on the backend and device of the module that owns it.
    """

    __slots__ = ("data", "_grad", "_grad_is_zero")

    def __init__(self, data):
        self.data = data
        self._grad = backend.namespace_of(data).zeros_like(data)
        self._grad_is_zero = False

    @property
    def grad(self):
        if self._grad_is_zero:
            self._grad[...] = 0
            self._grad_is_zero = False
        return self._grad

    @grad.setter
    def grad(self, value):
        self._grad = value
        self._grad_is_zero = False

    def accumulate_grad(self, value):
        """Add ``value`` (a new array of the gradient's shape that no one else holds: a layer's
        freshly computed product or sum) to the gradient. Right after ``zero_grad`` it becomes
        the gradient itself when it is a C-contiguous array of the same type and dtype, and is
        copied into the gradient's buffer otherwise."""
        if not self._grad_is_zero:
            self._grad += value
            return
        old = self._grad
        if type(value) is type(old) and value.dtype == old.dtype and tuple(value.shape) == tuple(old.shape) and backend.is_c_contiguous(value):
            self._grad = value
        else:
            old[...] = value
        self._grad_is_zero = False

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
        """Mark the gradient as zero (filled lazily, see the class docstring)."""
        self._grad_is_zero = True

    def __repr__(self):
        return f"Parameter(shape={self.shape}, dtype={backend.dtype_name(self.dtype)})"

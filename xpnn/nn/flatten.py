"""Flatten: collapse dimensions start_dim..end_dim into one (NCHW images into vectors)."""

from .. import backend
from ..errors import ShapeError
from .module import Module


class Flatten(Module):
    """Flattens the dimensions ``start_dim`` to ``end_dim`` into one, like ``torch.nn.Flatten``.

    By default (N, C, H, W) images become (N, C*H*W) vectors for a Linear layer. Forward and
    backward are reshapes; on NumPy and CuPy a batch-last Conv2d output flattens without a copy.

    Args:
        start_dim: first dimension to flatten; negative counts from the end. Default 1.
        end_dim: last dimension to flatten; negative counts from the end. Default -1.

    Shape:
        - Input: ``(*, S_start, ..., S_end, *)``, where both dimensions exist and ``start_dim``
          does not come after ``end_dim`` (a ShapeError otherwise).
        - Output: ``(*, S_start * ... * S_end, *)``.
    """

    _cache = ("_shape",)  # what only backward needs: dropped by a forward under nn.no_grad()

    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim
        self._shape = None

    def forward(self, x):
        xp = backend.namespace_of(x)
        ndim = x.ndim
        in_range = -ndim <= self.start_dim < ndim and -ndim <= self.end_dim < ndim
        start, end = (self.start_dim % ndim, self.end_dim % ndim) if in_range else (0, -1)
        if not in_range or start > end:
            raise ShapeError(f"Flatten(start_dim={self.start_dim}, end_dim={self.end_dim}): cannot flatten an input of shape {tuple(x.shape)}")
        self._shape = tuple(x.shape)
        merged = 1
        for d in self._shape[start:end + 1]:
            merged *= d
        return xp.reshape(x, self._shape[:start] + (merged,) + self._shape[end + 1:])

    def backward(self, grad):
        return backend.namespace_of(grad).reshape(grad, self._shape)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"

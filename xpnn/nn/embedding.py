"""Embedding: a lookup table of learned vectors indexed by integers."""

import numbers

from .. import backend
from .. import random as xpnn_random
from ..errors import ConfigError, DTypeError
from ..ops import embedding as embedding_ops
from .module import Module
from .parameter import Parameter


class Embedding(Module):
    """Looks up rows of a learned table: ``y[..., :] = weight[indices[...], :]``.

    The weight gradient adds each output row's gradient into the table row it was read from (a
    dense scatter-add, ``xpnn.ops.embedding``: one compiled pass on NumPy, sort and running sums
    elsewhere); there is no input gradient (``backward`` returns None), since indices are not
    differentiable. Initial weights are standard normal, as in PyTorch, drawn from xpnn's host
    generator.

    Indices must lie in [0, num_embeddings): on NumPy another index is a ConfigError naming it;
    on other backends (whose arrays a check would have to read back, stalling the step) its
    output row is NaN, which makes the loss NaN for the training loop's non-finite check to
    report, and it adds nothing to the gradient.

    Args:
        num_embeddings: V, the number of rows of the table.
        embedding_dim: D, the size of each row.
        padding_idx: a row (negative counts from the end, as in PyTorch) that starts as zeros and
            never receives a gradient, for padding tokens. Default None.
        max_norm: not supported (PyTorch renormalises looked-up rows in place); must be None.
        norm_type: the p of ``max_norm``'s norm; kept for PyTorch's signature. Default 2.0.
        scale_grad_by_freq: divide each table row's gradient by the number of times it was
            looked up in the batch. Default False.
        sparse: sparse gradients are not supported; must be False.
        dtype: float32 (default), float64 or float16.
        xp: the device or namespace to create the table on (default: NumPy).
        generator: a ``numpy.random.Generator`` for the initial weights (default: xpnn's).

    Shape:
        - Input: ``(*)``, an integer array of any shape.
        - Output: ``(*, embedding_dim)``.

    Attributes:
        weight: ``(num_embeddings, embedding_dim)``, standard normal at first (the
            ``padding_idx`` row zero).
    """

    _cache = ("_backward",)  # what only backward needs: dropped by a forward under nn.no_grad()

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False, dtype=None, xp=None, generator=None):
        super().__init__(xp)
        for name, value in (("num_embeddings", num_embeddings), ("embedding_dim", embedding_dim)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Embedding: expected {name} to be a positive int, got {value!r}")
        self.num_embeddings = int(num_embeddings)
        self.embedding_dim = int(embedding_dim)
        if padding_idx is not None:
            if not isinstance(padding_idx, numbers.Integral) or isinstance(padding_idx, bool) or not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ConfigError(f"Embedding: expected padding_idx to be None or an int in [{-self.num_embeddings}, {self.num_embeddings - 1}], got {padding_idx!r}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        if max_norm is not None:
            raise ConfigError(f"Embedding: max_norm is not supported (it renormalises looked-up rows in place), got max_norm={max_norm!r}; use max_norm=None")
        if sparse:
            raise ConfigError("Embedding: sparse gradients are not supported; use sparse=False (the gradient is a dense (num_embeddings, embedding_dim) array)")
        self.max_norm = None
        self.norm_type = float(norm_type)
        self.scale_grad_by_freq = bool(scale_grad_by_freq)
        self.sparse = False
        dtype = backend.resolve_dtype(dtype, self.xp, where="Embedding")
        generator = xpnn_random.default_generator() if generator is None else generator
        table = generator.standard_normal((self.num_embeddings, self.embedding_dim))
        if padding_idx is not None:
            table[padding_idx] = 0.0
        self.weight = Parameter(backend.asarray(table, self.xp, dtype, self.device))
        self._backward = None

    def _where(self):
        return f"Embedding({self.extra_repr()})"

    def forward(self, indices):
        where = self._where()
        backend.check_array(indices, self.xp, where, None, self.device)
        if not self.xp.isdtype(indices.dtype, "integral"):
            raise DTypeError(f"{where}: expected integer indices, got {backend.dtype_name(indices.dtype)} of shape {tuple(indices.shape)}")
        embedding_ops.check_indices(where, indices, self.num_embeddings)
        rows, self._backward = embedding_ops.embedding(self.weight.data, indices, self.padding_idx, self.scale_grad_by_freq)
        return rows

    def backward(self, grad):
        """Accumulate the weight gradient; returns None (indices have no gradient)."""
        self.weight.accumulate_grad(self._backward(grad))
        return None

    def extra_repr(self):
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        if self.scale_grad_by_freq:
            text += ", scale_grad_by_freq=True"
        return text

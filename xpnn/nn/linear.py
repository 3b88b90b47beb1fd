"""Linear (fully connected) layer, and Identity."""

import numbers

import numpy as np

from .. import backend, ops
from ..errors import ConfigError, ShapeError
from .init import initial_weight
from .module import Module
from .parameter import Parameter


class Linear(Module):
    """Applies an affine map to the last dimension: ``y = x @ weight^T + bias``, as PyTorch's.

    ``weight`` is stored as (out_features, in_features), PyTorch's layout, so state_dicts move
    between the two without transposes (issue 19; checkpoints of format version 1 held the
    transpose and are converted on load). The GEMMs take the transpose as a BLAS flag: forward is
    ``x @ weight^T``, backward adds ``grad^T @ x`` and the summed gradient to the parameters and
    returns ``grad @ weight``; when the input was a transposed buffer (a flattened batch-last
    Conv2d output) the returned gradient has the same memory order. The initial weights are the
    transpose of the (in, out) draw older versions made, so a seed gives the same network as before.

    Args:
        in_features: size of each input vector.
        out_features: size of each output vector.
        bias: learn an additive bias. Default True.
        init: weight initialisation, "he" (default), "xavier" or "normal" (see ``nn.init``).
        dtype: float32 (default), float64 or float16.
        xp: the device or namespace to create the parameters on (default: NumPy).
        generator: a ``numpy.random.Generator`` for the initial weights (default: xpnn's).

    Shape:
        - Input: ``(*, in_features)``, any number of leading dimensions.
        - Output: ``(*, out_features)``.

    Attributes:
        weight: ``(out_features, in_features)``.
        bias: ``(out_features,)``, zeros at first, or None.
    """

    _cache = ("_x",)  # what only backward needs: dropped by a forward under nn.no_grad()

    def __init__(self, in_features, out_features, bias=True, init="he", dtype=None, xp=None, generator=None):
        super().__init__(xp)
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"Linear: expected {name} to be a positive int, got {value!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.init = init
        dtype = backend.resolve_dtype(dtype, self.xp, where="Linear")
        # drawn (in, out) as before the layout changed, so a seed gives the same network
        w = initial_weight((self.in_features, self.out_features), self.in_features, self.out_features, init, generator).T
        self.weight = Parameter(backend.asarray(np.ascontiguousarray(w), self.xp, dtype, self.device))
        self.bias = Parameter(self.xp.zeros((self.out_features,), dtype=dtype, device=self.device)) if bias else None
        self._x = None

    def forward(self, x):
        where = f"Linear({self.in_features}, {self.out_features})"
        backend.check_array(x, self.xp, where, self.weight.data.dtype, self.device)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ShapeError(f"{where}: expected input of shape (..., {self.in_features}), got {tuple(x.shape)}")
        self._x = x
        y = ops.matmul(x, self.xp.matrix_transpose(self.weight.data))
        if self.bias is not None:
            y += self.bias.data
        return y

    def backward(self, grad):
        self.backward_params(grad)
        xp = self.xp
        if self._x.ndim == 2 and not backend.is_c_contiguous(self._x) and backend.is_c_contiguous(self._x.T):
            # The input is a transposed buffer (a flattened batch-last conv output): give the
            # gradient the same memory order, at no cost, so the layers below keep theirs.
            return xp.matrix_transpose(ops.matmul(xp.matrix_transpose(self.weight.data), xp.matrix_transpose(grad)))
        return ops.matmul(grad, self.weight.data)

    def backward_params(self, grad):
        xp = self.xp
        x2 = xp.reshape(self._x, (-1, self.in_features))
        g2 = xp.reshape(grad, (-1, self.out_features))
        self.weight.accumulate_grad(ops.matmul(xp.matrix_transpose(g2), x2))
        if self.bias is not None:
            self.bias.accumulate_grad(xp.sum(g2, axis=0))

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Identity(Module):
    """Returns its input unchanged, and the gradient unchanged: a placeholder, as in PyTorch.

    Shape:
        - Input: ``(*)``, any shape.
        - Output: ``(*)``, the input itself.
    """

    def forward(self, x):
        return x

    def backward(self, grad):
        return grad

"""Batch normalisation: BatchNorm1d for (N, C) and (N, C, L), BatchNorm2d for (N, C, H, W)."""

from .. import backend, ops
from ..errors import ConfigError, ShapeError
from .module import Module
from .parameter import Parameter


class _BatchNorm(Module):
    """Normalise each channel by the batch mean and (biased) variance in training mode, by the
    running estimates in eval mode, then scale by ``weight`` (gamma) and shift by ``bias`` (beta).
    Defaults and update rules are PyTorch's: the running variance is updated with the unbiased
    batch variance, ``momentum=None`` means a cumulative average, and without
    ``track_running_stats`` batch statistics are used in both modes."""

    ndims = ()  # accepted input ranks
    # what only backward needs: dropped by a forward under nn.no_grad()
    _cache = ("_axes", "_shape", "_batch_stats", "_inv_std", "_x_hat", "_norm_backward")
    # nn.Sequential asks a batch norm followed by an nn.ReLU to apply it in its compiled pass
    # (training statistics on NumPy); see nn.module._forward_fusing_relu.
    _fuses_relu = True
    layout = ""

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, dtype=None, xp=None):
        super().__init__(xp)
        name = type(self).__name__
        if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features < 1:
            raise ConfigError(f"{name}: expected a positive int num_features, got {num_features!r}")
        if eps <= 0:
            raise ConfigError(f"{name}: expected eps > 0, got {eps}")
        if momentum is not None and not 0 <= momentum <= 1:
            raise ConfigError(f"{name}: expected momentum in [0, 1] or None, got {momentum}")
        self.num_features = num_features
        self.eps = float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dtype = backend.resolve_dtype(dtype, self.xp, where=name)
        xp = self.xp
        if self.affine:
            self.weight = Parameter(xp.ones((num_features,), dtype=dtype, device=self.device))
            self.bias = Parameter(xp.zeros((num_features,), dtype=dtype, device=self.device))
        else:
            self.weight = self.bias = None
        if self.track_running_stats:
            self.register_buffer("running_mean", xp.zeros((num_features,), dtype=dtype, device=self.device))
            self.register_buffer("running_var", xp.ones((num_features,), dtype=dtype, device=self.device))
            self.register_buffer("num_batches_tracked", xp.zeros((), dtype=xp.int64, device=self.device))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def _where(self):
        return f"{type(self).__name__}({self.num_features})"

    def _check(self, x):
        where = self._where()
        dtype = self.weight.data.dtype if self.affine else (self.running_mean.dtype if self.track_running_stats else None)
        backend.check_array(x, self.xp, where, dtype, self.device)
        if x.ndim not in self.ndims or x.shape[1] != self.num_features:
            raise ShapeError(f"{where}: expected input of shape {self.layout.format(C=self.num_features)}, got {tuple(x.shape)}")

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def forward(self, x):
        self._check(x)
        xp = self.xp
        axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, self.num_features) + (1,) * (x.ndim - 2)
        self._axes, self._shape = axes, shape
        count = 1
        for a in axes:
            count *= x.shape[a]
        self._batch_stats = self.training or not self.track_running_stats
        if self._batch_stats:
            if count < 2:
                raise ConfigError(f"{self._where()}: expected more than 1 value per channel when training, got input of shape {tuple(x.shape)}")
            weight, bias = (self.weight.data, self.bias.data) if self.affine else (None, None)
            self._inv_std = self._x_hat = None  # the eval-mode cache, not kept beside this one
            if getattr(self, "_relu_follows", False):  # nn.Sequential's fusion: the ReLU in the compiled pass
                y, mean, var, self._norm_backward, mask = ops.batch_norm_training(x, weight, bias, self.eps, relu=True)
                object.__setattr__(self, "_relu_mask", mask)
            else:
                y, mean, var, self._norm_backward = ops.batch_norm_training(x, weight, bias, self.eps)
            if self.training and self.track_running_stats:
                self._update_running(mean, var, count)
            return y
        self._norm_backward = None
        self._inv_std = 1.0 / xp.sqrt(xp.reshape(self.running_var, shape) + self.eps)
        self._x_hat = (x - xp.reshape(self.running_mean, shape)) * self._inv_std
        if not self.affine:
            return self._x_hat
        return self._x_hat * xp.reshape(self.weight.data, shape) + xp.reshape(self.bias.data, shape)

    def _update_running(self, mean, var, count):
        """Move the running estimates toward the batch's (C,) mean and biased variance."""
        xp = self.xp
        self.num_batches_tracked += 1
        if self.momentum is None:  # cumulative moving average, computed on the device
            factor = 1.0 / xp.astype(self.num_batches_tracked, self.running_mean.dtype)
        else:
            factor = self.momentum
        unbiased_var = var * (count / (count - 1))
        self.running_mean += factor * (mean - self.running_mean)
        self.running_var += factor * (unbiased_var - self.running_var)

    def backward(self, grad):
        if self._batch_stats:  # ops.batch_norm_training's backward
            grad_x, grad_weight, grad_bias = self._norm_backward(grad)
            if self.affine:
                self.weight.accumulate_grad(grad_weight)
                self.bias.accumulate_grad(grad_bias)
            return grad_x
        xp = self.xp  # running statistics are constants: an affine map
        if self.affine:
            self.weight.accumulate_grad(xp.reshape(xp.sum(grad * self._x_hat, axis=self._axes), (self.num_features,)))
            self.bias.accumulate_grad(xp.reshape(xp.sum(grad, axis=self._axes), (self.num_features,)))
            grad = grad * xp.reshape(self.weight.data, self._shape)
        return grad * self._inv_std

    def extra_repr(self):
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, track_running_stats={self.track_running_stats}"


class BatchNorm1d(_BatchNorm):
    """Applies batch normalisation to (N, C) or (N, C, L) input, per channel.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, the statistics taken per channel over
    the batch (and length) axis: the batch's mean and biased variance in training mode, the
    running estimates in eval mode. Defaults and update rules are PyTorch's (see ``_BatchNorm``).
    Training needs more than one value per channel.

    Args:
        num_features: C, the number of channels.
        eps: added to the variance before its square root. Default 1e-5.
        momentum: weight of the newest batch in the running estimates,
            ``running += momentum * (batch - running)``; None for a cumulative average.
            Default 0.1.
        affine: learn a per-channel scale and shift. Default True.
        track_running_stats: keep running estimates for eval mode; without them batch
            statistics are used in both modes. Default True.
        dtype: float32 (default), float64 or float16.
        xp: the device or namespace to create the parameters and buffers on (default: NumPy).

    Shape:
        - Input: ``(N, C)`` or ``(N, C, L)``.
        - Output: the input's shape.

    Attributes:
        weight: ``(num_features,)``, ones at first, or None without ``affine``.
        bias: ``(num_features,)``, zeros at first, or None without ``affine``.
        running_mean: buffer ``(num_features,)``, zeros at first, or None without
            ``track_running_stats``; likewise ``running_var`` (ones) and
            ``num_batches_tracked`` (a 0-d int64 count).
    """

    ndims = (2, 3)
    layout = "(N, {C}) or (N, {C}, L)"


class BatchNorm2d(_BatchNorm):
    """Applies batch normalisation to (N, C, H, W) input, per channel.

    ``y = (x - mean) / sqrt(var + eps) * weight + bias``, the statistics taken per channel over
    the batch and both spatial axes: the batch's mean and biased variance in training mode, the
    running estimates in eval mode. Defaults and update rules are PyTorch's (see ``_BatchNorm``).
    Training needs more than one value per channel.

    Args:
        num_features: C, the number of channels.
        eps: added to the variance before its square root. Default 1e-5.
        momentum: weight of the newest batch in the running estimates,
            ``running += momentum * (batch - running)``; None for a cumulative average.
            Default 0.1.
        affine: learn a per-channel scale and shift. Default True.
        track_running_stats: keep running estimates for eval mode; without them batch
            statistics are used in both modes. Default True.
        dtype: float32 (default), float64 or float16.
        xp: the device or namespace to create the parameters and buffers on (default: NumPy).

    Shape:
        - Input: ``(N, C, H, W)``.
        - Output: the input's shape.

    Attributes:
        weight: ``(num_features,)``, ones at first, or None without ``affine``.
        bias: ``(num_features,)``, zeros at first, or None without ``affine``.
        running_mean: buffer ``(num_features,)``, zeros at first, or None without
            ``track_running_stats``; likewise ``running_var`` (ones) and
            ``num_batches_tracked`` (a 0-d int64 count).
    """

    ndims = (4,)
    layout = "(N, {C}, H, W)"

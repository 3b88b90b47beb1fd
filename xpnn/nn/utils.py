"""Gradient utilities with torch.nn.utils' names: :func:`clip_grad_norm_` and
:func:`clip_grad_value_`, acting on ``Parameter.grad`` in place without reading anything back to
the host (the clip coefficient is computed on the device, as PyTorch does)."""

import math
import numbers

from .. import backend
from ..errors import ArgumentTypeError, ConfigError, NonFiniteLossError
from .parameter import Parameter

__all__ = ["clip_grad_norm_", "clip_grad_value_"]


def _parameters(where, parameters):
    """``parameters`` (one Parameter or an iterable of them, such as ``model.parameters()``) as a list."""
    params = [parameters] if isinstance(parameters, Parameter) else list(parameters)
    for p in params:
        if not isinstance(p, Parameter):
            raise ArgumentTypeError(f"{where}: expected xpnn.nn.Parameter objects, got {type(p).__name__}")
    return params


def _real(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _norm(xp, g, norm_type):
    """The ``norm_type`` vector norm of ``g`` as a 0-d array (in float32 for a float16 ``g``)."""
    wide = backend.update_dtype(g)
    if g.dtype != wide:
        g = xp.astype(g, wide)
    if norm_type == math.inf:
        return xp.max(xp.abs(g)) if g.size else xp.zeros((), dtype=g.dtype, device=backend.device_of(g))
    if norm_type == 2:
        return xp.sqrt(xp.sum(g * g))
    if norm_type == 1:
        return xp.sum(xp.abs(g))
    return xp.sum(xp.abs(g) ** norm_type) ** (1.0 / norm_type)


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale the gradients of ``parameters`` in place so that their total norm (the norm of the
    vector of every gradient's norm) is at most ``max_norm``: each gradient is multiplied by
    ``min(1, max_norm / (total_norm + 1e-6))``, as in PyTorch.

    Args:
        parameters: one Parameter or an iterable of them (``model.parameters()``).
        max_norm: the largest total norm allowed, a number >= 0.
        norm_type: the p of the p-norm, a number > 0, or ``math.inf`` (or "inf") for the largest
            absolute value (default 2).
        error_if_nonfinite: raise NonFiniteLossError when the total norm is NaN or infinite
            (default False). This reads the norm back to the host: the one host sync here.

    Returns:
        The total norm before clipping, a 0-d array on the gradients' device (float32 for
        float16 gradients); a float 0.0 when there are no parameters. Nothing is read back to
        the host (unless ``error_if_nonfinite``), so a training step stays free of syncs.
    """
    where = "clip_grad_norm_"
    params = _parameters(where, parameters)
    if not (_real(max_norm) and math.isfinite(max_norm) and max_norm >= 0):
        raise ConfigError(f"{where}: expected max_norm to be a finite number >= 0, got {max_norm!r}")
    if norm_type == "inf":
        norm_type = math.inf
    if not (_real(norm_type) and norm_type > 0 and not math.isnan(norm_type)):
        raise ConfigError(f"{where}: expected norm_type to be a number > 0 or inf, got {norm_type!r}")
    if not params:
        return 0.0
    grads = [p.grad for p in params]
    xp = backend.namespace_of(*grads)
    norms = [_norm(xp, g, norm_type) for g in grads]
    dtype = xp.result_type(*norms) if len(norms) > 1 else norms[0].dtype
    norms = xp.stack([xp.astype(n, dtype) for n in norms])
    total = _norm(xp, norms, norm_type)
    if not isinstance(total, backend.array_type(xp)):  # NumPy's reductions give scalars
        total = xp.asarray(total)
    if error_if_nonfinite and not bool(xp.isfinite(total)):
        raise NonFiniteLossError(
            f"{where}: the total norm of order {norm_type} of the gradients is non-finite ({float(total)}), so it cannot be clipped; "
            "pass error_if_nonfinite=False to scale by it anyway"
        )
    scale = xp.minimum(max_norm / (total + 1e-6), xp.ones_like(total))
    for g in grads:
        g *= xp.astype(scale, g.dtype)
    return total


def clip_grad_value_(parameters, clip_value):
    """Clamp the gradients of ``parameters`` in place to ``[-clip_value, clip_value]``.

    Args:
        parameters: one Parameter or an iterable of them (``model.parameters()``).
        clip_value: a finite number >= 0.
    """
    where = "clip_grad_value_"
    params = _parameters(where, parameters)
    if not (_real(clip_value) and math.isfinite(clip_value) and clip_value >= 0):
        raise ConfigError(f"{where}: expected clip_value to be a finite number >= 0, got {clip_value!r}")
    for p in params:
        g = p.grad
        xp = backend.namespace_of(g)
        g[...] = xp.clip(g, -clip_value, clip_value)

"""A public gradient checker: a module's ``backward`` against float64 central finite differences.

``xpnn.gradcheck(module, x)`` is the check every xpnn layer and loss passes in the test suite; use it
on a layer of one's own. Like ``torch.autograd.gradcheck`` it returns True or raises. (The module is
named ``gradient_check`` so that importing it never hides the function ``xpnn.gradcheck``.)
"""

import numpy as np

from . import backend
from . import random as xpnn_random
from .errors import ArgumentTypeError, XpnnError


class GradcheckError(XpnnError, AssertionError):
    """An analytic gradient (``backward``) differs from the finite-difference one."""


def gradcheck(module, x, target=None, eps=1e-6, rtol=1e-5, atol=1e-7, seed=0):
    """Check ``module.backward`` for the input and every parameter against central finite
    differences, in float64, on the module's own device; returns True or raises
    :class:`GradcheckError` naming the module, the gradient (input or parameter name), the worst
    element's index, its analytic and numeric values, and how many elements differ.

    The scalar checked is ``sum(module(x) * G)`` for a random ``G`` (drawn from ``seed``): its
    gradient is ``module.backward(G)`` for the input and ``Parameter.grad`` for each parameter.
    An element passes when ``|analytic - numeric| <= atol + rtol * |numeric|``. For a loss, pass
    ``target`` (it is called as ``module(x, target)``).

    The module is checked in place and left as it was: its floating parameters and buffers are
    cast to float64 for the check, and afterwards its arrays, gradients, training mode and random
    generators (Dropout masks: each forward draws the same mask) are put back. Each element costs
    two forward passes, so use small inputs (a batch of 2-4, a few channels).

    Example, a layer of one's own::

        import numpy as np
        import xpnn
        from xpnn import nn

        class Square(nn.Module):
            def forward(self, x):
                self.x = x
                return x * x

            def backward(self, grad):
                return 2 * self.x * grad

        xpnn.gradcheck(Square(), np.random.default_rng(0).normal(size=(3, 4)))   # True
        xpnn.gradcheck(nn.Linear(4, 2), np.ones((3, 4)))                         # True
    """
    name = _describe(module)
    if not callable(getattr(module, "backward", None)) or not callable(module):
        raise ArgumentTypeError(f"gradcheck: expected a module with forward and backward (an xpnn.nn.Module), found {type(module).__name__}")
    if not hasattr(x, "shape") and not isinstance(x, (list, tuple)):
        raise ArgumentTypeError(f"gradcheck: expected x to be an array, found {type(x).__name__}")
    host = np.array(backend.to_numpy(x) if hasattr(x, "shape") else x)
    if host.dtype.kind not in "biuf":
        raise ArgumentTypeError(f"gradcheck: expected a numeric x, found dtype {host.dtype}")
    host = host.astype(np.float64)
    xp, device = module.xp, module.device
    saved = _Saved(module)
    try:
        module.to(dtype="float64")
        tgt = None
        if target is not None:
            tgt = backend.asarray(target, xp, device=device)
            if backend.dtype_name(tgt.dtype) in backend.FLOAT_DTYPES:
                tgt = backend.asarray(tgt, xp, xp.float64, device)

        def run(h):
            saved.reseed()
            inp = backend.asarray(h, xp, xp.float64, device)
            return module(inp) if tgt is None else module(inp, tgt)

        out = run(host)
        if not hasattr(out, "shape"):
            raise ArgumentTypeError(f"gradcheck: expected {name} to return an array, found {type(out).__name__}")
        g_host = np.random.default_rng(seed).normal(size=tuple(out.shape))
        g = backend.asarray(g_host, xp, xp.float64, device)

        def objective(h):
            return float(np.sum(backend.to_numpy(run(h)) * g_host))

        module.zero_grad()
        run(host)
        grad_x = module.backward(g)
        _compare(name, "input", backend.to_numpy(grad_x), _numeric(objective, host.copy(), eps), rtol, atol)
        for pname, param in module.named_parameters():
            analytic = np.array(backend.to_numpy(param.grad), dtype=np.float64)
            start = np.array(backend.to_numpy(param.data), dtype=np.float64)

            def param_objective(ph, param=param):
                param.data = backend.asarray(ph, xp, xp.float64, device)
                return objective(host)

            numeric = _numeric(param_objective, start.copy(), eps)
            param.data = backend.asarray(start, xp, xp.float64, device)
            _compare(name, f"parameter {pname!r}", analytic, numeric, rtol, atol)
    finally:
        saved.restore()
    return True


def _numeric(fn, host, eps):
    """Central differences of the scalar ``fn(host)`` with respect to every element of ``host``."""
    grad = np.zeros_like(host)
    flat, out = host.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = fn(host)
        flat[i] = old - eps
        down = fn(host)
        flat[i] = old
        out[i] = (up - down) / (2 * eps)
    return grad


def _compare(name, what, analytic, numeric, rtol, atol):
    analytic = np.asarray(analytic, dtype=np.float64)
    if analytic.shape != numeric.shape:
        raise GradcheckError(f"gradcheck: {name}: the gradient of the {what} has shape {analytic.shape}, expected {numeric.shape}")
    excess = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
    excess = np.where(np.isfinite(analytic) & np.isfinite(numeric), excess, np.inf)
    bad = excess > 0
    if not bad.any():
        return
    worst = np.unravel_index(int(np.argmax(excess)), excess.shape) if excess.ndim else ()
    index = tuple(int(i) for i in worst)
    raise GradcheckError(
        f"gradcheck: {name}: the gradient of the {what} differs from finite differences at index {index}: "
        f"analytic {analytic[index]:.8g}, numeric {numeric[index]:.8g} "
        f"({int(bad.sum())} of {bad.size} elements outside atol={atol:g} + rtol={rtol:g} * |numeric|)"
    )


def _describe(module):
    text = " ".join(repr(module).split())
    return text if len(text) <= 80 else f"{type(module).__name__}(...)"


class _Saved:
    """What the check changes in a module, kept to put back: arrays, gradients, buffers, the
    training mode and the state of every random generator (the module's and xpnn's)."""

    def __init__(self, module):
        self.module = module
        self.modules = list(module.modules())
        copy = lambda a: backend.namespace_of(a).asarray(a, copy=True)  # noqa: E731  (a float64 module's arrays are kept, not cast, and may change in place)
        self.params = [(p, p.data, copy(p._grad), p._grad_is_zero) for p in module.parameters()]
        self.buffers = [(m, {key: copy(value) for key, value in m._buffers.items()}) for m in self.modules]
        self.training = [(m, m.training) for m in self.modules]
        self.generators = [(gen, gen.bit_generator.state) for m in self.modules for gen in vars(m).values() if isinstance(gen, np.random.Generator)]
        self.global_state = xpnn_random.get_rng_state()

    def reseed(self):
        """Every forward draws the same random numbers (Dropout's mask)."""
        for gen, state in self.generators:
            gen.bit_generator.state = state
        xpnn_random.default_generator().bit_generator.state = self.global_state

    def restore(self):
        self.reseed()
        for p, data, grad, is_zero in self.params:
            p.data, p._grad, p._grad_is_zero = data, grad, is_zero
        for m, buffers in self.buffers:
            for key, value in buffers.items():
                setattr(m, key, value)
        for m, training in self.training:
            object.__setattr__(m, "training", training)

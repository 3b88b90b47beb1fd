"""The test suite's gradient checks: thin wrappers over the public :func:`xpnn.gradcheck` that put
the layer or loss on the backend under test first."""

import numpy as np

from xpnn import backend as xb
from xpnn.gradient_check import _numeric as numeric_grad
from xpnn.gradient_check import gradcheck


def check_layer(layer, x_host, be, rng, reseed=None, rtol=1e-5, atol=1e-7):
    """``xpnn.gradcheck`` of ``layer`` (input and every parameter) for a random upstream gradient
    drawn from ``rng``, with the layer moved to ``be`` in float64 (where it stays, for the test's
    later checks). ``reseed`` is called once first, to give a random layer its generator;
    gradcheck then draws the same mask in every forward."""
    layer.to(be.device, dtype="float64")
    if reseed is not None:
        reseed()
    assert gradcheck(layer, np.asarray(x_host, dtype=np.float64), seed=int(rng.integers(2**31)), rtol=rtol, atol=atol)


def check_loss(loss_fn, input_host, target, be, rtol=1e-5, atol=1e-8, upstream=None):
    """``xpnn.gradcheck`` of ``loss_fn`` on ``be``, and ``loss_fn.backward(upstream)`` (None: the
    loss's own scale) against finite differences of the (weighted) loss."""
    loss_fn.to(be.device)
    input_host = np.asarray(input_host, dtype=np.float64)
    assert gradcheck(loss_fn, input_host, target=target, rtol=rtol, atol=atol)

    def objective(h):
        value = xb.to_numpy(loss_fn(be.asarray(h), target))
        return float(np.sum(value * (1.0 if upstream is None else upstream)))

    loss_fn(be.asarray(input_host), target)
    grad = loss_fn.backward(None if upstream is None else be.asarray(upstream))
    np.testing.assert_allclose(xb.to_numpy(grad), numeric_grad(objective, input_host.copy(), 1e-6), rtol=rtol, atol=atol)

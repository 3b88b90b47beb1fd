"""Finite-difference gradient checks in float64 for layers and losses on any backend."""

import numpy as np

from xpnn import backend as xb


def numeric_grad(fn, host, eps=1e-6):
    """Central differences of the scalar ``fn(host_array)`` with respect to every element."""
    grad = np.zeros_like(host)
    flat = host.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        up = fn(host)
        flat[i] = old - eps
        down = fn(host)
        flat[i] = old
        grad.reshape(-1)[i] = (up - down) / (2 * eps)
    return grad


def check_layer(layer, x_host, be, rng, reseed=None, rtol=1e-5, atol=1e-7):
    """Compare ``layer.backward`` (input and every parameter) with finite differences of
    sum(layer(x) * G) for a random G, with the layer on ``be`` in float64. ``reseed`` is called
    before each forward so random layers (dropout) draw the same mask every time."""
    layer.to(be.device, dtype="float64")
    x_host = np.asarray(x_host, dtype=np.float64)
    reseed = reseed or (lambda: None)
    reseed()
    out = layer(be.asarray(x_host))
    g_host = rng.normal(size=tuple(out.shape))
    g = be.asarray(g_host)

    def objective(xh):
        reseed()
        return float(np.sum(xb.to_numpy(layer(be.asarray(xh))) * g_host))

    layer.zero_grad()
    reseed()
    layer(be.asarray(x_host))
    gx = xb.to_numpy(layer.backward(g))
    np.testing.assert_allclose(gx, numeric_grad(objective, x_host.copy()), rtol=rtol, atol=atol, err_msg="input gradient")

    for name, param in layer.named_parameters():
        analytic = xb.to_numpy(param.grad).copy()

        def param_objective(ph, param=param):
            param.data = be.asarray(ph)
            return objective(x_host)

        start = xb.to_numpy(param.data).copy()
        numeric = numeric_grad(param_objective, start.copy())
        param.data = be.asarray(start)
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol, err_msg=f"gradient of {name}")


def check_loss(loss_fn, input_host, target, be, rtol=1e-5, atol=1e-8, upstream=None):
    """Compare ``loss_fn.backward(upstream)`` with finite differences of the (weighted) loss."""
    input_host = np.asarray(input_host, dtype=np.float64)

    def objective(h):
        value = xb.to_numpy(loss_fn(be.asarray(h), target))
        return float(np.sum(value * (1.0 if upstream is None else upstream)))

    loss_fn(be.asarray(input_host), target)
    grad = loss_fn.backward(None if upstream is None else be.asarray(upstream))
    np.testing.assert_allclose(xb.to_numpy(grad), numeric_grad(objective, input_host.copy()), rtol=rtol, atol=atol)

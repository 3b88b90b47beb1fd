"""GEMM work and rate: this machine's NumPy float32 matmul rate, and a training step's GEMMs as
im2col sees them (forward, dW and dX of every Linear and Conv2d; no dX for the first layer,
whose input is the data)."""

import math
import time

import numpy as np

from xpnn import threads


def layer_gemms(model, image):
    """(rows per image, K, N) of each Linear/Conv2d of an xpnn model, in the order of
    ``model.modules()`` (the first is the one that reads the data), found by running one ``image``
    (shape (1, ...)) through it and reading the output shape each layer recorded: Linear(i, o) is
    (1, i, o); Conv2d is (OH*OW, C*KH*KW, O). Layers inside containers (a ResNet's blocks) count."""
    model(image)
    shapes = []
    for layer in model.modules():
        weight = getattr(layer, "weight", None)
        if weight is None:
            continue
        shape = layer._output_shape  # what the forward wrapper recorded for backward's check
        if weight.data.ndim == 2:
            out, k = weight.data.shape  # Linear's (out, in)
            shapes.append((math.prod(shape[1:-1]), k, out))
        elif weight.data.ndim == 4:
            out, cin, kh, kw = weight.data.shape
            shapes.append((math.prod(shape[2:]), cin * kh * kw, out))
    return shapes


def step_gemms(layers, batch_size):
    """The (role, M, K, N) products of one training step at ``batch_size``: C(M, N) = A(M, K) @ B(K, N)."""
    gemms = []
    for i, (rows, k, n) in enumerate(layers):
        m = batch_size * rows
        gemms += [("forward", m, k, n), ("dW", k, m, n)]
        if i > 0:
            gemms.append(("dX", m, n, k))
    return gemms


def flops(gemms):
    return sum(2 * m * k * n for _, m, k, n in gemms)


def _operands(role, m, k, n, rng):
    """The operands in the layout the layer uses: x @ W.T, g.T @ x, g @ W (W is (out, in); dW's
    (K, N) here is the product's transpose, the same arithmetic)."""
    def rand(*shape):
        return rng.standard_normal(shape, dtype=np.float32)
    if role == "dW":
        return rand(k, n).T, rand(k, m)  # g.T @ x: (N, K) @ (K, M)
    if role == "dX":
        return rand(m, k), rand(k, n)  # g @ W
    return rand(m, k), rand(n, k).T  # x @ W.T


def seconds(role, m, k, n, min_calls=5, min_seconds=0.05, rng=None):
    """Best seconds of one float32 ``A @ B`` of this shape (after one warm-up call), on BLAS's own
    threads (xpnn's set to one meanwhile: a runner may have held BLAS to one thread): the floor is
    what the machine can do, and the best call is the one least disturbed by anything else."""
    with threads.parallel(1):
        return _best_seconds(role, m, k, n, min_calls, min_seconds, rng)


def _best_seconds(role, m, k, n, min_calls, min_seconds, rng):
    a, b = _operands(role, m, k, n, rng or np.random.default_rng(0))
    a @ b
    times = []
    while len(times) < min_calls or sum(times) < min_seconds:
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return min(times)


PEAK_SIZE = 2048


def peak_rate(size=PEAK_SIZE, calls=7):
    """NumPy float32 FLOP/s on a ``size`` x ``size`` square matmul (best of ``calls``)."""
    return 2 * size**3 / seconds("forward", size, size, size, min_calls=calls)


def shape_seconds(gemms):
    """Seconds NumPy needs for these GEMMs alone, each timed at its own shape."""
    return sum(seconds(*g) for g in gemms)

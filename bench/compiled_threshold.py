"""Below how many elements is the portable ReLU or Dropout faster on NumPy than its compiled pass?
The compiled doors (``ops.relu``, ``ops.dropout``) pay a fixed cost per call (Numba's dispatch, the
flat views, the uint8 mask, the thread split) of some 15 microseconds; the portable ufuncs cost
little per call and more per element. Times forward + backward of each path on C-ordered float32
arrays of growing size, alternating (median call, microseconds), on one xpnn thread (BLAS's
threads: what ``Trainer`` gives the small models whose activations are this small). Run from the
repository root: ``python bench/compiled_threshold.py``; ``ops.activation.NUMBA_MIN_ELEMENTS``
and ``ops.dropout.NUMBA_MIN_ELEMENTS`` come from it (``bench/NOTES.md``)."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.timing import alternate, block_size, median  # noqa: E402
from xpnn.ops.activation import relu_numba, relu_portable  # noqa: E402
from xpnn.ops.dropout import dropout_numba, dropout_portable  # noqa: E402

SIZES = [4096, 16384, 32768, 49152, 65536, 131072, 262144]


def main():
    rng = np.random.default_rng(0)
    print(f"{'elements':>9} {'ReLU portable':>14} {'compiled':>9} {'Dropout portable':>17} {'compiled':>9}  (microseconds)")
    for size in SIZES:
        x = rng.normal(size=(64, size // 64)).astype(np.float32)
        uniform = rng.random(size=x.shape, dtype=np.float32)
        grad = rng.normal(size=x.shape).astype(np.float32)

        def relu(path):
            def run():
                _, backward = path(x)
                backward(grad)
            return run

        def dropout(path):
            def run():
                _, backward = path(x, uniform, 0.5)
                backward(grad)
            return run

        tasks = {"relu_portable": relu(relu_portable), "relu_numba": relu(relu_numba),
                 "dropout_portable": dropout(dropout_portable), "dropout_numba": dropout(dropout_numba)}
        us = {k: median(t) * 1e6 for k, t in alternate({k: (f, block_size(f, 2, 0.05), 7) for k, f in tasks.items()}, 7).items()}
        print(f"{size:9d} {us['relu_portable']:14.1f} {us['relu_numba']:9.1f} {us['dropout_portable']:17.1f} {us['dropout_numba']:9.1f}", flush=True)


if __name__ == "__main__":
    main()

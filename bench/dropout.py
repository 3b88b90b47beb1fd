"""Dropout on NumPy: the compiled pass of ``ops.dropout`` (compare, uint8 keep mask, scaled product;
one more pass backward) against the portable comparison, scaled float mask and multiplies it
replaced, given the same uniform draws, and the whole layer's forward and backward (the draws
included), at the shapes of PyTorch's MNIST example network at batch 64 (after its pool, and
after its first Linear layer), batch-last as a convolution hands them on. Tasks alternate block
by block (``bench.timing.alternate``), median call in milliseconds, on xpnn's threads as
``Trainer`` gives that network. Run from the repository root: ``python bench/dropout.py``."""

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import runners  # noqa: E402
from bench.timing import alternate, block_size, median  # noqa: E402
import xpnn  # noqa: E402
from xpnn import nn  # noqa: E402
from xpnn.ops.dropout import dropout_numba, dropout_portable  # noqa: E402

SHAPES = [((64, 12, 12, 64), (3, 0, 1, 2), 0.25, "after the pool, (64, 64, 12, 12) batch-last"), ((64, 128), (0, 1), 0.5, "after Linear, (64, 128)")]


def main():
    xpnn.set_num_threads(xpnn.train.default_threads(runners.build_xpnn("torchmnist")))
    print(f"xpnn threads: {xpnn.get_num_threads()}")
    rng = np.random.default_rng(0)
    for memory, order, p, name in SHAPES:
        x = rng.normal(size=memory).astype(np.float32).transpose(order)
        uniform = rng.random(size=memory, dtype=np.float32).transpose(order)
        grad = rng.normal(size=memory).astype(np.float32).transpose(order)
        layer = nn.Dropout(p)

        def both(path):
            def run():
                _, backward = path(x, uniform, p)
                backward(grad)
            return run

        tasks = {"portable": both(dropout_portable), "compiled": both(dropout_numba),
                 "layer": lambda: (layer(x), layer.backward(grad))}
        ms = {k: median(t) * 1e3 for k, t in alternate({k: (f, block_size(f, 2, 0.2), 7) for k, f in tasks.items()}, 7).items()}
        print(f"{name}: forward + backward given the draws: portable {ms['portable']:.3f} ms, compiled {ms['compiled']:.3f} "
              f"({ms['portable'] / ms['compiled']:.2f}x); the layer with its draws {ms['layer']:.3f} ms", flush=True)


if __name__ == "__main__":
    main()

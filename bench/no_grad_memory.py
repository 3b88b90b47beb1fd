"""Memory of LeNet inference with and without the backward cache (xpnn.no_grad), on NumPy.

    python -m bench.no_grad_memory [--batch 1000]

tracemalloc sees NumPy's array allocations. For each mode a fresh eval-mode LeNet runs one
forward on a (batch, 1, 28, 28) float32 batch (after a small warm-up under no_grad, so compiled
kernels and constant caches are ready and no cache is held); reported are the peak allocated
during the forward, and what stays allocated once the output is dropped: the backward cache.
"""

import argparse
import gc
import tracemalloc

import numpy as np

import xpnn
from xpnn.models import LeNet


def measure(batch, grad):
    xpnn.manual_seed(0)
    model = LeNet().eval()
    with xpnn.no_grad():
        model(np.zeros((2, 1, 28, 28), np.float32))  # warm-up: kernels compiled, nothing kept
    x = np.random.default_rng(0).normal(size=(batch, 1, 28, 28)).astype(np.float32)
    gc.collect()
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    with xpnn.set_grad_enabled(grad):
        y = model(x)
    peak = tracemalloc.get_traced_memory()[1] - base
    del y
    gc.collect()
    kept = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    return peak, kept


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000)
    args = parser.parse_args(argv)
    mib = 1024 * 1024
    print(f"LeNet eval-mode forward, batch {args.batch}, float32, NumPy")
    for label, grad in (("gradients enabled (cache kept)", True), ("xpnn.no_grad()", False)):
        peak, kept = measure(args.batch, grad)
        print(f"  {label:32s} peak during forward {peak / mib:7.1f} MiB   kept after forward {kept / mib:7.1f} MiB")


if __name__ == "__main__":
    main()

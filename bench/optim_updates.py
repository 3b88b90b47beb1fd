"""Portable (NumPy ufuncs) vs compiled (Numba, one pass) optimizer updates for a LeNet-sized
parameter set, float32: the median time of one optimizer step over all parameters.

    python -m bench.optim_updates [--repeats 50]
"""

import argparse
import time

import numpy as np

import xpnn
from xpnn import optim
from xpnn.models import build_model
from xpnn.ops import updates

OPTIMIZERS = {
    "Adam": lambda ps: optim.Adam(ps, lr=1e-3, weight_decay=1e-4),
    "Adadelta": lambda ps: optim.Adadelta(ps, weight_decay=1e-4),
    "Adagrad": lambda ps: optim.Adagrad(ps, weight_decay=1e-4),
    "NAdam": lambda ps: optim.NAdam(ps, weight_decay=1e-4),
    "RAdam": lambda ps: optim.RAdam(ps, weight_decay=1e-4),
}


def _median_step(make, repeats, portable):
    xpnn.manual_seed(0)
    model = build_model("lenet", (1, 28, 28), 10)
    params = list(model.parameters())
    rng = np.random.default_rng(0)
    for p in params:
        p.grad[...] = rng.normal(size=p.shape).astype(np.float32)
    opt = make(params)
    original = updates._compiled_path
    if portable:
        updates._compiled_path = lambda arrays: "portable"
    try:
        opt.step()  # compile / allocate state
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - start)
    finally:
        updates._compiled_path = original
    return float(np.median(times)), sum(p.size for p in params)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args(argv)
    print(f"{'optimizer':10s} {'portable ms':>12s} {'numba ms':>10s} {'speed-up':>9s}")
    for name, make in OPTIMIZERS.items():
        slow, size = _median_step(make, args.repeats, portable=True)
        fast, _ = _median_step(make, args.repeats, portable=False)
        print(f"{name:10s} {slow * 1e3:12.3f} {fast * 1e3:10.3f} {slow / fast:8.1f}x")
    print(f"(LeNet, {size:,} float32 parameters, median of {args.repeats} steps)")


if __name__ == "__main__":
    main()

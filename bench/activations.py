"""Forward + backward time of each elementwise activation on NumPy, against ReLU (compiled) and the
convolution whose output it would follow, to decide which activations need a compiled door.

    python bench/activations.py [--shape 128 6 28 28] [--rounds 9]

The input is LeNet's first convolution output at batch 128 (float32, standard normal, so the
kinks' masks are unpredictable). Each task is one forward and one backward with a gradient of
ones; tasks alternate block by block (bench.timing.alternate) and the median call is reported, in
milliseconds and as a multiple of ReLU's and of the Conv2d(1, 6, 5, padding=2) step producing the
same tensor.
"""

import argparse
import pathlib
import sys

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from bench.timing import alternate, block_size, median  # noqa: E402
from xpnn import nn  # noqa: E402

ACTIVATIONS = ["ReLU", "LeakyReLU", "GELU", "Sigmoid", "Tanh", "ELU", "SiLU", "Softplus", "Mish", "Hardtanh", "ReLU6",
               "Hardswish", "Softsign", "PReLU"]


def step(layer, x, g):
    def run():
        layer(x)
        layer.backward(g)
    return run


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, nargs=4, default=[128, 6, 28, 28])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n, c, h, w = args.shape
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    g = np.ones_like(x)
    tasks = {}
    for name in ACTIVATIONS:
        layer = nn.PReLU(c) if name == "PReLU" else getattr(nn, name)()
        fn = step(layer, x, g)
        tasks[name] = (fn, block_size(fn, 2, 0.2), args.rounds)
    conv = nn.Conv2d(1, c, 5, padding=2)
    image = rng.standard_normal((n, 1, h, w)).astype(np.float32)
    fn = step(conv, image, g)
    tasks["Conv2d(1, 6, 5)"] = (fn, block_size(fn, 2, 0.2), args.rounds)
    times = {name: median(t) for name, t in alternate(tasks, args.rounds).items()}
    relu, conv_time = times["ReLU"], times["Conv2d(1, 6, 5)"]
    print(f"forward + backward on {tuple(args.shape)} float32, median of alternating blocks")
    print(f"{'layer':<18}{'ms':>8}{'x ReLU':>9}{'x conv':>9}")
    for name, seconds in times.items():
        print(f"{name:<18}{seconds * 1e3:>8.2f}{seconds / relu:>9.1f}{seconds / conv_time:>9.2f}")


if __name__ == "__main__":
    main()

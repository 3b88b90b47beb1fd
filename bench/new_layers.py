"""python -m bench.new_layers: do issue 16's window layers cost what the existing ones cost for
the same arithmetic? Times, side by side in one run (alternating blocks, median of every call,
NumPy float32), forward + backward of each pair:

- ``Conv1d`` against ``Conv2d`` over the same input viewed 1 pixel high (the same code, plus
  the 3-D <-> 4-D views): the ratio should be 1.
- ``ConvTranspose2d`` against the ``Conv2d`` it is the transpose of (its forward is that
  Conv2d's backward, GEMM + col2im, and its backward that Conv2d's forward, im2col + GEMM, plus
  the weight gradient both have): the same GEMMs and window copies, in the other order.
- ``MaxPool1d`` / ``AvgPool1d`` against ``MaxPool2d`` / ``AvgPool2d`` over the 1-high view.

Prints a table of milliseconds and ratios, and the share of the machine other processes took
meanwhile, and writes ``bench/results/new_layers.json``. Options: ``--rounds`` (default 12),
``--threads`` (BLAS threads, default 1: on a small shared machine multi-threaded OpenBLAS can be
tens of times slower on these small GEMMs while another process holds a core) and ``--quick``
(smaller cases, for a smoke run; writes nothing)."""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from xpnn import nn

from . import contention
from .timing import alternate, block_size, median

RESULTS = Path(__file__).resolve().parent / "results" / "new_layers.json"


def step(layer, x, grad):
    """One forward and backward of ``layer`` (input gradient included)."""
    def run():
        layer(x)
        layer.backward(grad)
    return run


def conv1d_pair(n, c, out, length, k, stride, padding):
    rng = np.random.default_rng(0)
    one_d = nn.Conv1d(c, out, k, stride=stride, padding=padding)
    two_d = nn.Conv2d(c, out, (1, k), stride=(1, stride), padding=(0, padding))
    two_d.weight.data = one_d.weight.data.reshape(two_d.weight.shape)
    x = rng.standard_normal((n, c, length)).astype(np.float32)
    grad = rng.standard_normal(tuple(one_d(x).shape)).astype(np.float32)
    name = f"Conv1d({c}, {out}, {k}, stride={stride}, padding={padding}) on ({n}, {c}, {length})"
    return name, step(one_d, x, grad), step(two_d, x[:, :, None, :], grad[:, :, None, :])


def transpose_pair(n, c_in, c_out, size, k, stride, padding, output_padding):
    """ConvTranspose2d(c_in -> c_out) on (n, c_in, size, size) and Conv2d(c_out -> c_in) on its
    output shape: the same weight, the same products."""
    rng = np.random.default_rng(0)
    up = nn.ConvTranspose2d(c_in, c_out, k, stride=stride, padding=padding, output_padding=output_padding)
    down = nn.Conv2d(c_out, c_in, k, stride=stride, padding=padding)
    down.weight.data = up.weight.data
    x = rng.standard_normal((n, c_in, size, size)).astype(np.float32)
    y = up(x)
    grad_up = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    grad_down = rng.standard_normal(tuple(down(grad_up).shape)).astype(np.float32)
    assert grad_down.shape == x.shape
    name = f"ConvTranspose2d({c_in}, {c_out}, {k}, stride={stride}, padding={padding}, output_padding={output_padding}) on {x.shape}"
    return name, step(up, x, grad_up), step(down, grad_up, grad_down)


def pool_pair(one_d, two_d, n, c, length):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, length)).astype(np.float32)
    grad = rng.standard_normal(tuple(one_d(x).shape)).astype(np.float32)
    return f"{one_d!r} on ({n}, {c}, {length})", step(one_d, x, grad), step(two_d, x[:, :, None, :], grad[:, :, None, :])


def cases(quick):
    n = 8 if quick else 64
    return [
        ("Conv1d / Conv2d 1-high", conv1d_pair(n, 16, 32, 1024, 5, 1, 2)),
        ("Conv1d / Conv2d 1-high", conv1d_pair(n, 1, 8, 2048, 9, 2, 4)),  # few outputs: the streamed path
        ("Conv1d / Conv2d 1-high", conv1d_pair(n, 64, 64, 256, 3, 1, 1)),
        ("ConvTranspose2d / Conv2d", transpose_pair(n, 16, 6, 14, 5, 2, 2, 1)),  # LeNet conv1 run backwards
        ("ConvTranspose2d / Conv2d", transpose_pair(n, 32, 16, 14, 4, 2, 1, 0)),  # a DCGAN-style upsampling
        ("ConvTranspose2d / Conv2d", transpose_pair(n, 8, 8, 16, 3, 1, 1, 0)),
        ("MaxPool1d / MaxPool2d 1-high", pool_pair(nn.MaxPool1d(2), nn.MaxPool2d((1, 2)), n, 32, 1024)),
        ("MaxPool1d / MaxPool2d 1-high", pool_pair(nn.MaxPool1d(3, 2, 1), nn.MaxPool2d((1, 3), (1, 2), (0, 1)), n, 32, 1024)),
        ("AvgPool1d / AvgPool2d 1-high", pool_pair(nn.AvgPool1d(3, 2, 1), nn.AvgPool2d((1, 3), (1, 2), (0, 1)), n, 32, 1024)),
    ]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.new_layers", description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true")
    argv = sys.argv[1:] if argv is None else argv
    args = p.parse_args(argv)
    if os.environ.get("OPENBLAS_NUM_THREADS") != str(args.threads):  # pools read it when loaded: run again
        env = dict(os.environ, **{v: str(args.threads) for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(RESULTS.parents[2]), os.environ.get("PYTHONPATH")]))
        os.execve(sys.executable, [sys.executable, "-m", "bench.new_layers", *argv], env)
    rows, meter = [], contention.Meter()
    print(f"{'pair':30} {'case':90} {'new ms':>8} {'old ms':>8} {'ratio':>6}")
    for pair, (name, new, old) in cases(args.quick):
        calls = block_size(new, 3, 0.05)
        times = alternate({"new": (new, calls, args.rounds), "old": (old, calls, args.rounds)}, args.rounds)
        new_ms, old_ms = median(times["new"]) * 1e3, median(times["old"]) * 1e3
        rows.append({"pair": pair, "case": name, "new_ms": new_ms, "old_ms": old_ms, "ratio": new_ms / old_ms})
        print(f"{pair:30} {name:90} {new_ms:8.3f} {old_ms:8.3f} {new_ms / old_ms:6.2f}")
    others = meter.others()
    print(f"BLAS threads {args.threads}; other processes took {others:.0%} of the machine meanwhile" if others is not None else "")
    if not args.quick:
        RESULTS.parent.mkdir(exist_ok=True)
        RESULTS.write_text(json.dumps({"threads": args.threads, "others": others, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()

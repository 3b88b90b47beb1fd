"""Linear's weight layout (issue 19): one forward + backward of the GEMMs a Linear runs, with the
weight stored (in, out) (``x @ W``, ``dW = x^T @ g``, ``dx = g @ W^T``) against (out, in) as
PyTorch stores it (``x @ W^T``, ``dW = g^T @ x``, ``dx = g @ W``), at the Linear shapes of the MLP
(784-256-10), the seed CNN (6272-128-10) and LeNet (400-120-10), batch 64 and 256, float32 NumPy.
Also the transposed-input case (a flattened batch-last conv output: ``x`` is the transpose of a
C-contiguous buffer, and the input gradient is returned in that order). The BLAS call takes each
operand's transpose as a flag, so the two layouts should cost the same; this measures it.

    python -m bench.linear_layout [--repeats 7]
"""

import argparse
import time

import numpy as np

SHAPES = {"mlp": [(784, 256), (256, 10)], "cnn": [(6272, 128), (128, 10)], "lenet": [(400, 120), (120, 10)]}


def step(x, w, g, layout, transposed_input):
    """Forward, weight gradient and input gradient of one Linear in ``layout``."""
    if layout == "in_out":
        y = x @ w
        dw = x.T @ g
        dx = (w @ g.T).T if transposed_input else g @ w.T
    else:
        y = x @ w.T
        dw = g.T @ x
        dx = (w.T @ g.T).T if transposed_input else g @ w
    return y, dw, dx


def best(fn, repeats, inner):
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - start) / inner)
    return min(times)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m bench.linear_layout", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)
    rng = np.random.default_rng(0)
    print(f"{'model':6} {'batch':>5} {'input':10} {'(in,out) us':>12} {'(out,in) us':>12} {'ratio':>6} {'dW (in,out)':>12} {'dW (out,in)':>12}")
    for model, layers in SHAPES.items():
        for batch in (64, 256):
            for transposed in (False, True) if model != "mlp" else (False,):
                totals, weight_grads = {}, {}
                for layout in ("in_out", "out_in"):
                    total = grads = 0.0
                    for fan_in, fan_out in layers:
                        first = transposed and (fan_in, fan_out) == layers[0]
                        x = rng.standard_normal((fan_in, batch), dtype=np.float32).T if first else rng.standard_normal((batch, fan_in), dtype=np.float32)
                        w = rng.standard_normal((fan_in, fan_out) if layout == "in_out" else (fan_out, fan_in), dtype=np.float32)
                        g = rng.standard_normal((batch, fan_out), dtype=np.float32)
                        total += best(lambda: step(x, w, g, layout, first), args.repeats, 20)
                        grads += best(lambda: x.T @ g if layout == "in_out" else g.T @ x, args.repeats, 20)
                    totals[layout], weight_grads[layout] = total, grads
                name = "batch-last" if transposed else "rows"
                print(f"{model:6} {batch:5d} {name:10} {totals['in_out'] * 1e6:12.1f} {totals['out_in'] * 1e6:12.1f} {totals['out_in'] / totals['in_out']:6.3f} "
                      f"{weight_grads['in_out'] * 1e6:12.1f} {weight_grads['out_in'] * 1e6:12.1f}")


if __name__ == "__main__":
    main()

"""Is Conv2d's weight gradient faster on NumPy summed over pixel pieces than as one GEMM? The
product is (K window rows x P pixels) @ (P x O output channels): with a small K*O output and a long
P it is thin, and OpenBLAS runs it several times slower per element than pieces small enough for
its small-matrix path (``xpnn.ops.conv.WEIGHT_GRADIENT_PIECE``). Times, side by side (alternating,
median), the whole product, pieces of several sizes, and what Conv2d does. Run from the repository
root: ``python bench/weight_gradient.py``."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.timing import alternate, median  # noqa: E402
from xpnn.ops import conv  # noqa: E402

CASES = [  # (K, O, P, layer)
    (25, 6, 128 * 28 * 28, "LeNet conv1, batch 128"),
    (25, 6, 64 * 28 * 28, "LeNet conv1, batch 64"),
    (9, 8, 64 * 28 * 28, "seed CNN conv, batch 64"),
    (9, 8, 256 * 28 * 28, "seed CNN conv, batch 256"),
    (150, 16, 128 * 10 * 10, "LeNet conv2, batch 128"),
]
PIECES = (1024, 4096, 16384)


def pieces(cols, grad, piece):
    total = cols[..., :piece] @ grad[..., :piece].T
    for start in range(piece, cols.shape[-1], piece):
        total += cols[..., start:start + piece] @ grad[..., start:start + piece].T
    return total


def main():
    rng = np.random.default_rng(0)
    rows = []
    for k, o, p, name in CASES:
        cols = rng.normal(size=(1, k, p)).astype(np.float32)
        grad = rng.normal(size=(1, o, p)).astype(np.float32)
        whole = cols[0] @ grad[0].T
        np.testing.assert_allclose(conv.weight_gradient(np, cols, grad)[0], whole, rtol=1e-3, atol=1e-2)
        tasks = {"whole": lambda: cols[0] @ grad[0].T, "conv2d": lambda: conv.weight_gradient(np, cols, grad)}
        tasks.update({f"pieces_{n}": (lambda n=n: pieces(cols[0], grad[0], n)) for n in PIECES})
        for fn in tasks.values():
            fn()
        ms = {n: median(t) * 1e3 for n, t in alternate({n: (fn, 5, 8) for n, fn in tasks.items()}, 8).items()}
        rows.append({"layer": name, "K": k, "O": o, "P": p, **{f"{n}_ms": v for n, v in ms.items()}})
        print(f"{name:26} {k:3}x{o:<2} over {p:6} pixels: whole {ms['whole']:5.2f} ms, Conv2d {ms['conv2d']:5.2f}; pieces "
              + ", ".join(f"{n}: {ms[f'pieces_{n}']:5.2f}" for n in PIECES))
    out = Path(__file__).resolve().parent / "results" / "weight_gradient.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

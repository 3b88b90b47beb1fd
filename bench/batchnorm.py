"""BatchNorm2d in training mode, forward + backward, on NumPy: the Numba kernels of
``ops.batch_norm_training`` against the portable version beside them, side by side (alternating
blocks, median), float32, at ResNet-20's three stage shapes on Conv2d's batch-last layout (batch
128). Run from the repository root: ``python bench/batchnorm.py``; writes
``bench/results/batchnorm.json``."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.timing import alternate, block_size, median  # noqa: E402
from xpnn.ops import normalization  # noqa: E402

CASES = [(16, 32), (32, 16), (64, 8)]  # (channels, height = width), batch 128


def main():
    rng = np.random.default_rng(0)
    rows = []
    for c, size in CASES:
        x = rng.normal(size=(c, size, size, 128)).astype(np.float32).transpose(3, 0, 1, 2)  # batch-last
        grad = rng.normal(size=(c, size, size, 128)).astype(np.float32).transpose(3, 0, 1, 2)
        weight, bias = rng.normal(size=c).astype(np.float32), rng.normal(size=c).astype(np.float32)

        def step(fn):
            return lambda: fn(x, weight, bias, 1e-5)[3](grad)

        tasks = {"portable": step(normalization.batch_norm_training_portable), "numba": step(normalization.batch_norm_training)}
        fast, slow = tasks["numba"](), tasks["portable"]()
        error = max(float(np.abs(a - b).max() / np.abs(b).max()) for a, b in zip(fast, slow))
        ms = {k: median(t) * 1e3 for k, t in alternate({k: (fn, block_size(fn, 2, 0.2), 7) for k, fn in tasks.items()}, 7).items()}
        rows.append({"channels": c, "size": size, "batch": 128, "max_relative_error": error, **{f"{k}_ms": v for k, v in ms.items()}})
        print(f"BatchNorm2d({c}) on {size}x{size}, batch 128, forward + backward: portable {ms['portable']:.2f} ms, "
              f"Numba {ms['numba']:.2f} ms ({ms['portable'] / ms['numba']:.1f}x); max relative difference {error:.1e}")
    out = Path(__file__).resolve().parent / "results" / "batchnorm.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

"""Issue 16's LayerNorm, GroupNorm, Embedding and Upsample against existing layers doing the same
arithmetic, and the Embedding weight gradient's paths, on NumPy (float32, single process).

    python -m bench.norm_embed_upsample [--rounds 5]

Rows (forward + backward, median seconds per call, alternating blocks):
- LayerNorm(D) on (N, D) vs BatchNorm1d on the (N, D) transposed data (D features of N values):
  both normalise N*D values over one axis.
- GroupNorm(1, C) on (N, C, H, W) vs BatchNorm2d(N) on the (C, N, H, W) transpose: statistics
  per sample vs per channel over the same element count.
- Upsample(scale_factor=2) nearest vs AvgPool2d(2)'s backward (the same 4-way copy/sum pattern).
- Embedding weight gradient: the Numba pass, its portable twin (sort + running sums) on NumPy,
  np.add.at and a flattened np.bincount.
"""

import argparse

import numpy as np

from xpnn import nn
from xpnn.ops import embedding as embedding_ops

from .timing import alternate, block_size, median


def _step(layer, x):
    up = np.ones_like(layer(x))

    def run():
        layer(x)
        layer.backward(up)

    return run


def _tasks(pairs):
    return {name: (fn, block_size(fn, 3, 0.2), 3) for name, fn in pairs}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []

    x = rng.normal(size=(4096, 256)).astype(np.float32)
    rows += alternate(_tasks([
        ("LayerNorm(256) on (4096, 256)", _step(nn.LayerNorm(256), x)),
        ("BatchNorm1d(256) on (4096, 256)", _step(nn.BatchNorm1d(256), x)),
    ]), args.rounds).items()

    x = rng.normal(size=(64, 32, 28, 28)).astype(np.float32)
    rows += alternate(_tasks([
        ("GroupNorm(1, 32) on (64, 32, 28, 28)", _step(nn.GroupNorm(1, 32), x)),
        ("GroupNorm(8, 32) on (64, 32, 28, 28)", _step(nn.GroupNorm(8, 32), x)),
        ("BatchNorm2d(64) on (32, 64, 28, 28)", _step(nn.BatchNorm2d(64), np.ascontiguousarray(x.transpose(1, 0, 2, 3)))),
    ]), args.rounds).items()

    x = rng.normal(size=(64, 32, 28, 28)).astype(np.float32)
    pool = nn.AvgPool2d(2)
    rows += alternate(_tasks([
        ("Upsample(x2 nearest) (64, 32, 14, 14) -> 28x28", _step(nn.Upsample(scale_factor=2), x[:, :, :14, :14].copy())),
        ("Upsample(x2 bilinear) (64, 32, 14, 14) -> 28x28", _step(nn.Upsample(scale_factor=2, mode="bilinear"), x[:, :, :14, :14].copy())),
        ("AvgPool2d(2) forward + backward 28x28 -> 14x14", _step(pool, x)),
    ]), args.rounds).items()

    for vocab, dim, count in ((10_000, 128, 2048), (1_000, 64, 8192), (50_000, 256, 16384)):
        idx = rng.integers(0, vocab, count)
        g = rng.normal(size=(count, dim)).astype(np.float32)

        def add_at(idx=idx, g=g, vocab=vocab, dim=dim):
            out = np.zeros((vocab, dim), np.float32)
            np.add.at(out, idx, g)

        def bincount(idx=idx, g=g, vocab=vocab, dim=dim):
            keys = (idx[:, None] * dim + np.arange(dim)).ravel()
            np.bincount(keys, weights=g.ravel(), minlength=vocab * dim).reshape(vocab, dim).astype(np.float32)

        label = f"V={vocab} D={dim} M={count}"
        rows += alternate(_tasks([
            (f"Embedding grad {label}: Numba", lambda: embedding_ops.embedding_backward_numba(idx, g, vocab)),
            (f"Embedding grad {label}: portable", lambda: embedding_ops.embedding_backward_portable(idx, g, vocab)),
            (f"Embedding grad {label}: np.add.at", add_at),
            (f"Embedding grad {label}: np.bincount", bincount),
        ]), args.rounds).items()

    for name, seconds in rows:
        print(f"{name:<60} {median(seconds) * 1e3:9.3f} ms")


if __name__ == "__main__":
    main()

"""MNIST for the benchmarks: the training split as float32 host arrays, and one fixed batch order."""

import numpy as np

from xpnn.data import load_dataset


def load(data_dir, model):
    """(x, y) of the 60,000 training images: x (N, 784) for "mlp", (N, 1, 28, 28) otherwise."""
    return load_dataset("mnist", root=data_dir, download=False).arrays(flatten=model == "mlp")


def batches(x, y, batch_size, count, seed=0):
    """``count`` host batches (xb, yb) in the first-epoch order of a DataLoader shuffled with ``seed``."""
    order = np.random.default_rng(seed).permutation(len(x))
    starts = [(i * batch_size) % (len(x) - batch_size + 1) for i in range(count)]
    return [(x[order[s:s + batch_size]], y[order[s:s + batch_size]]) for s in starts]

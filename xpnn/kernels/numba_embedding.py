"""Embedding's weight gradient for NumPy, compiled by Numba: one pass over the lookups adds each
gradient row into its table row (``np.add.at`` does the same some 15-30 times slower, a bincount
5-10 times; ``bench/NOTES.md``). Single-threaded, in lookup order."""

import numba
import numpy as np


@numba.njit(error_model="numpy", cache=True, nogil=True)
def _scatter_rows(indices, grad, skip, counts, out):
    dim = grad.shape[1]
    for i in range(indices.shape[0]):
        row = indices[i]
        if row == skip:
            continue
        if counts.shape[0]:
            scale = 1.0 / counts[row]
            for j in range(dim):
                out[row, j] += grad[i, j] * scale
        else:
            for j in range(dim):
                out[row, j] += grad[i, j]


def embedding_backward(indices, grad, num_embeddings, padding_idx=-1, scale_grad_by_freq=False):
    """The (num_embeddings, D) weight gradient: row ``indices[i]`` of it sums ``grad[i]`` over
    every lookup ``i`` of C-contiguous int64 ``indices`` (M,) in [0, num_embeddings) and
    C-contiguous float ``grad`` (M, D); the row ``padding_idx`` (-1: none) stays zero, and with
    ``scale_grad_by_freq`` each contribution is divided by how often its row was looked up."""
    out = np.zeros((num_embeddings, grad.shape[1]), dtype=grad.dtype)
    counts = np.bincount(indices, minlength=num_embeddings).astype(grad.dtype) if scale_grad_by_freq else np.zeros(0, grad.dtype)
    _scatter_rows(indices, grad, padding_idx, counts, out)
    return out

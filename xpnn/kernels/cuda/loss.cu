// Softmax cross-entropy with integer labels over C-contiguous (N, C) logits, one row per thread
// (classifiers have few classes; a row per block would pay for shared-memory reductions).

#include "common.cuh"

// losses[r] = logsumexp(row) - row[label] and probs = softmax(row), the sums in double;
// probabilities below `tiny` (the smallest normal number) are flushed to zero. A label outside
// [0, C) makes the row's loss and probabilities NaN: the training loop's NaN check reports it.
template <typename T>
__global__ void xpnn_softmax_cross_entropy_forward(const T* __restrict__ logits,
                                                   const long long* __restrict__ labels,
                                                   T* __restrict__ losses, T* __restrict__ probs,
                                                   long long rows, int classes, T tiny, T nan) {
    XPNN_GRID_STRIDE_LOOP(r, rows) {
        const T* row = logits + r * classes;
        T* p = probs + r * classes;
        const long long label = labels[r];
        if (label < 0 || label >= classes) {
            losses[r] = nan;
            for (int j = 0; j < classes; ++j) p[j] = nan;
            continue;
        }
        T top = row[0];
        for (int j = 1; j < classes; ++j) {
            if (row[j] > top || row[j] != row[j]) top = row[j];
        }
        double total = 0.0;
        for (int j = 0; j < classes; ++j) {
            const T e = exp(row[j] - top);
            p[j] = e;
            total += (double)e;
        }
        losses[r] = (T)((double)top + log(total) - (double)row[label]);
        for (int j = 0; j < classes; ++j) {
            const double q = (double)p[j] / total;
            p[j] = q < (double)tiny ? T(0) : (T)q;
        }
    }
}

// The logits' gradient (probs - one_hot(label)) * scale[row]. One thread per element.
template <typename T>
__global__ void xpnn_softmax_cross_entropy_backward(const T* __restrict__ probs,
                                                    const long long* __restrict__ labels,
                                                    const T* __restrict__ scale,
                                                    T* __restrict__ out, long long count,
                                                    int classes) {
    XPNN_GRID_STRIDE_LOOP(i, count) {
        const long long r = i / classes;
        const T hit = i % classes == labels[r] ? T(1) : T(0);
        out[i] = (probs[i] - hit) * scale[r];
    }
}

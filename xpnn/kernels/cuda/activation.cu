// ReLU over gap-free arrays walked in memory order (any axis order: Conv2d's batch-last output
// included). One thread per element.

#include "common.cuh"

// out = max(x, 0) (a NaN stays NaN) and mask = 1 where x > 0, else 0.
template <typename T>
__global__ void xpnn_relu_forward(const T* __restrict__ x, T* __restrict__ out,
                                  T* __restrict__ mask, long long count) {
    XPNN_GRID_STRIDE_LOOP(i, count) {
        const T v = x[i];
        const bool keep = v > T(0);
        out[i] = keep || v != v ? v : T(0);
        mask[i] = keep ? T(1) : T(0);
    }
}

// The input gradient grad * mask (a multiply, so a NaN gradient stays NaN, as in the portable path).
template <typename T>
__global__ void xpnn_relu_backward(const T* __restrict__ grad, const T* __restrict__ mask,
                                   T* __restrict__ out, long long count) {
    XPNN_GRID_STRIDE_LOOP(i, count) { out[i] = grad[i] * mask[i]; }
}

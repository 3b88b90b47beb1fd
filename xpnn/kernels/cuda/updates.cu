// Optimizer updates over C-contiguous parameters and their state, in place, one thread per
// element. Each does the portable update's float operations in the same order (the tests
// compare them bit for bit).

#include "common.cuh"

// Adam and AdamW: optional L2 term (grad + l2 * param) or decoupled decay (param * decay),
// the moments, amsgrad's running maximum when `amsgrad` is set (`max_exp_avg_sq` is ignored
// otherwise), then param -= m / (sqrt(v) + shifted_eps) * scale, with the bias corrections
// folded into `scale` and `shifted_eps` by the caller.
template <typename T>
__global__ void xpnn_adam(T* __restrict__ param, const T* __restrict__ grad,
                          T* __restrict__ exp_avg, T* __restrict__ exp_avg_sq,
                          T* __restrict__ max_exp_avg_sq, long long count, T one_minus_beta1,
                          T beta2, T one_minus_beta2, T scale, T shifted_eps, T l2, T decay,
                          int amsgrad) {
    XPNN_GRID_STRIDE_LOOP(i, count) {
        T p = param[i];
        T g = grad[i];
        if (l2 != T(0)) g = g + l2 * p;
        if (decay != T(1)) p = p * decay;
        const T m = exp_avg[i] + one_minus_beta1 * (g - exp_avg[i]);
        T v = beta2 * exp_avg_sq[i] + one_minus_beta2 * g * g;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        if (amsgrad) {
            const T seen = max_exp_avg_sq[i];
            v = seen > v || seen != seen ? seen : v;
            max_exp_avg_sq[i] = v;
        }
        param[i] = p - m / (sqrt(v) + shifted_eps) * scale;
    }
}

// SGD with PyTorch's rule: d = grad (+ weight_decay * param); with momentum, the buffer is d on
// the first step and momentum * buffer + (1 - dampening) * d after, and d becomes the buffer
// (Nesterov: d + momentum * buffer); then param -= lr * d. `momentum_buffer` is ignored when
// momentum is 0.
template <typename T>
__global__ void xpnn_sgd(T* __restrict__ param, const T* __restrict__ grad,
                         T* __restrict__ momentum_buffer, long long count, T lr, T momentum,
                         T one_minus_dampening, T weight_decay, int nesterov, int first) {
    XPNN_GRID_STRIDE_LOOP(i, count) {
        const T p = param[i];
        T d = grad[i];
        if (weight_decay != T(0)) d = d + weight_decay * p;
        if (momentum != T(0)) {
            const T b = first ? d : momentum_buffer[i] * momentum + one_minus_dampening * d;
            momentum_buffer[i] = b;
            d = nesterov ? d + momentum * b : b;
        }
        param[i] = p - lr * d;
    }
}

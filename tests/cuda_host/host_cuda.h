// CUDA's built-ins mapped to host C++, so that xpnn's .cu kernels compile with g++ and run on
// the CPU in the tests. A launch runs every block's threads one after another on one host
// thread, setting blockIdx/threadIdx before each call; that is a faithful schedule for kernels
// whose threads never communicate (xpnn's use no shared memory, atomics or __syncthreads).
#pragma once

#include <math.h>

#include <cstddef>
#include <utility>

struct dim3 {
    unsigned int x, y, z;
};

static dim3 threadIdx, blockIdx, blockDim, gridDim;

#define __global__
#define __device__
#define __forceinline__ inline

namespace xpnn_host {

template <class... Args, std::size_t... I>
void call(void (*kernel)(Args...), void** args, std::index_sequence<I...>) {
    kernel(*static_cast<Args*>(args[I])...);
}

// Run `kernel` over a grid of `blocks` x `threads`, with `args` laid out as for cuLaunchKernel:
// one pointer to each argument's value.
template <class... Args>
void launch(void (*kernel)(Args...), unsigned int blocks, unsigned int threads, void** args) {
    gridDim = dim3{blocks, 1, 1};
    blockDim = dim3{threads, 1, 1};
    for (unsigned int b = 0; b < blocks; ++b) {
        for (unsigned int t = 0; t < threads; ++t) {
            blockIdx = dim3{b, 0, 0};
            threadIdx = dim3{t, 0, 0};
            call(kernel, args, std::index_sequence_for<Args...>{});
        }
    }
}

}  // namespace xpnn_host

// An extern "C" entry point `<kernel>__<type>(blocks, threads, args)` for one instantiation.
#define XPNN_HOST_EXPORT(kernel, type)                                                         \
    extern "C" void kernel##__##type(unsigned int blocks, unsigned int threads, void** args) { \
        xpnn_host::launch(&kernel<type>, blocks, threads, args);                               \
    }

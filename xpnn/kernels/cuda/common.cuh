// Shared by every xpnn CUDA source: each includes it, and xpnn.kernels.cuda_sources inlines it
// for NVRTC, which has no file system to search.
#ifndef XPNN_COMMON_CUH
#define XPNN_COMMON_CUH
//
// Every kernel is a template over the element type T (float or double) and walks its index
// space with a grid-stride loop, so any launch configuration covers all of it: the GPU launches
// as many blocks as fit (xpnn.kernels.cuda_launch), and the tests run the same loop on the CPU
// with one block or a few. No kernel uses shared memory, atomics or __syncthreads, so each
// index is computed by one thread from its inputs alone, in a fixed order: the results do not
// depend on the launch configuration.

#define XPNN_GRID_STRIDE_LOOP(i, count)                                                        \
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < (count);           \
         i += (long long)blockDim.x * gridDim.x)

// The geometry of a 2-D window over a (N, C, H, W) image: kernel, stride, padding, dilation
// and output sizes, passed as plain ints (one kernel argument each).
#define XPNN_WINDOW_PARAMS                                                                     \
    int height, int width, int out_h, int out_w, int kernel_h, int kernel_w, int stride_h,      \
        int stride_w, int pad_h, int pad_w, int dilation_h, int dilation_w

// The output row (or column) whose window holds input position `pos` at kernel offset `k`, or
// -1 when no window does: the inverse of pos = out * stride - pad + k * dilation that the
// gathering backward passes (col2im, max pool) loop over.
__device__ __forceinline__ int xpnn_covering_output(int pos, int pad, int k, int dilation, int stride, int out) {
    const int origin = pos + pad - k * dilation;
    if (origin < 0 || origin % stride != 0 || origin / stride >= out) return -1;
    return origin / stride;
}

#endif  // XPNN_COMMON_CUH

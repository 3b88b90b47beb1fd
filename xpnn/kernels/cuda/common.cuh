// Shared by every xpnn CUDA source (prepended to each one by xpnn.kernels.cuda_sources).
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

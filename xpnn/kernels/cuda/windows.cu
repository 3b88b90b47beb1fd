// Window kernels over (N, C, H, W) images: im2col and col2im in Conv2d's batch-last layout,
// and the max pool forward and backward. The backward passes gather (each input pixel sums
// the window entries that cover it, in kernel-offset order) rather than scatter, so they need
// no atomics and add in the same order as the portable loops.

#include "common.cuh"

// The window buffer (C, KH, KW, OH, OW, N), C-contiguous, of an image with any element strides;
// zero outside the image (zero padding). One thread per buffer element.
template <typename T>
__global__ void xpnn_im2col(const T* __restrict__ image, T* __restrict__ cols, long long count,
                            int images, XPNN_WINDOW_PARAMS, long long stride_n, long long stride_c,
                            long long stride_y, long long stride_x) {
    XPNN_GRID_STRIDE_LOOP(i, count) {
        long long t = i;
        const int n = (int)(t % images);
        t /= images;
        const int ow = (int)(t % out_w);
        t /= out_w;
        const int oh = (int)(t % out_h);
        t /= out_h;
        const int kw = (int)(t % kernel_w);
        t /= kernel_w;
        const int kh = (int)(t % kernel_h);
        const long long c = t / kernel_h;
        const int y = oh * stride_h - pad_h + kh * dilation_h;
        const int x = ow * stride_w - pad_w + kw * dilation_w;
        const bool inside = y >= 0 && y < height && x >= 0 && x < width;
        cols[i] = inside ? image[n * stride_n + c * stride_c + y * stride_y + x * stride_x] : T(0);
    }
}

// The transpose of xpnn_im2col: each pixel of the C-contiguous batch-last image (C, H, W, N)
// sums its entries of the window buffer (C, KH, KW, OH, OW, N), kernel offsets in row-major order.
template <typename T>
__global__ void xpnn_col2im(const T* __restrict__ cols, T* __restrict__ image, long long count,
                            int images, XPNN_WINDOW_PARAMS) {
    XPNN_GRID_STRIDE_LOOP(i, count) {
        long long t = i;
        const int n = (int)(t % images);
        t /= images;
        const int x = (int)(t % width);
        t /= width;
        const int y = (int)(t % height);
        const long long c = t / height;
        T total = T(0);
        for (int kh = 0; kh < kernel_h; ++kh) {
            const int oh = xpnn_covering_output(y, pad_h, kh, dilation_h, stride_h, out_h);
            if (oh < 0) continue;
            for (int kw = 0; kw < kernel_w; ++kw) {
                const int ow = xpnn_covering_output(x, pad_w, kw, dilation_w, stride_w, out_w);
                if (ow < 0) continue;
                const long long at = (((c * kernel_h + kh) * kernel_w + kw) * out_h + oh) * out_w + ow;
                total += cols[at * images + n];
            }
        }
        image[i] = total;
    }
}

// Max over each window of an image with any element strides (padding reads as `lowest`, -inf);
// `best` and `which` (the row-major offset in the window of the first maximum, or of the last
// NaN: PyTorch's rule) share the element strides `out_*`. One thread per output element.
template <typename T>
__global__ void xpnn_max_pool_forward(const T* __restrict__ image, T* __restrict__ best,
                                      int* __restrict__ which, long long count, int channels,
                                      XPNN_WINDOW_PARAMS, T lowest, long long in_n, long long in_c,
                                      long long in_y, long long in_x, long long out_n,
                                      long long out_c, long long out_y, long long out_x) {
    XPNN_GRID_STRIDE_LOOP(i, count) {
        long long t = i;
        const int ow = (int)(t % out_w);
        t /= out_w;
        const int oh = (int)(t % out_h);
        t /= out_h;
        const int c = (int)(t % channels);
        const long long n = t / channels;
        T top = lowest;
        int arg = 0;
        for (int kh = 0; kh < kernel_h; ++kh) {
            const int y = oh * stride_h - pad_h + kh * dilation_h;
            for (int kw = 0; kw < kernel_w; ++kw) {
                const int x = ow * stride_w - pad_w + kw * dilation_w;
                const bool inside = y >= 0 && y < height && x >= 0 && x < width;
                const T v = inside ? image[n * in_n + c * in_c + y * in_y + x * in_x] : lowest;
                const int k = kh * kernel_w + kw;
                if (k == 0 || v > top || v != v) {
                    top = v;
                    arg = k;
                }
            }
        }
        const long long at = n * out_n + c * out_c + oh * out_y + ow * out_x;
        best[at] = top;
        which[at] = arg;
    }
}

// The max pool's input gradient: each input pixel sums the output gradients of the windows
// whose maximum it was, kernel offsets in row-major order. Arrays with any element strides
// (`grad` and `which` share theirs). One thread per input element.
template <typename T>
__global__ void xpnn_max_pool_backward(const T* __restrict__ grad, const int* __restrict__ which,
                                       T* __restrict__ out, long long count, int channels,
                                       XPNN_WINDOW_PARAMS, long long grad_n, long long grad_c,
                                       long long grad_y, long long grad_x, long long out_n,
                                       long long out_c, long long out_y, long long out_x) {
    XPNN_GRID_STRIDE_LOOP(i, count) {
        long long t = i;
        const int x = (int)(t % width);
        t /= width;
        const int y = (int)(t % height);
        t /= height;
        const int c = (int)(t % channels);
        const long long n = t / channels;
        T total = T(0);
        for (int kh = 0; kh < kernel_h; ++kh) {
            const int oh = xpnn_covering_output(y, pad_h, kh, dilation_h, stride_h, out_h);
            if (oh < 0) continue;
            for (int kw = 0; kw < kernel_w; ++kw) {
                const int ow = xpnn_covering_output(x, pad_w, kw, dilation_w, stride_w, out_w);
                if (ow < 0) continue;
                const long long at = n * grad_n + c * grad_c + oh * grad_y + ow * grad_x;
                if (which[at] == kh * kernel_w + kw) total += grad[at];
            }
        }
        out[n * out_n + c * out_c + y * out_y + x * out_x] = total;
    }
}

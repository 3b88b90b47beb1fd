"""One-launch CuPy im2col and col2im for the layouts of ``xpnn.functional``: each thread writes
one element, and col2im gathers (each image pixel sums its own window entries, as Chainer's
kernel does), so the result is deterministic and needs no atomics."""

import functools

import cupy

_GEOMETRY = "int32 N, int32 C, int32 H, int32 W, int32 OH, int32 OW, int32 KH, int32 KW, " \
            "int32 SH, int32 SW, int32 PH, int32 PW, int32 DH, int32 DW"


@functools.cache
def _im2col_kernel():
    return cupy.ElementwiseKernel(
        "raw T x, " + _GEOMETRY,
        "T col",
        """
        ptrdiff_t t = i;
        const int n = t % N; t /= N;
        const int ow = t % OW; t /= OW;
        const int oh = t % OH; t /= OH;
        const int kw = t % KW; t /= KW;
        const int kh = t % KH;
        const int c = t / KH;
        const int h = oh * SH - PH + kh * DH;
        const int w = ow * SW - PW + kw * DW;
        if (h >= 0 && h < H && w >= 0 && w < W) {
            const ptrdiff_t index[] = {n, c, h, w};
            col = x[index];
        } else {
            col = 0;
        }
        """,
        "xpnn_im2col",
    )


@functools.cache
def _col2im_kernel():
    return cupy.ElementwiseKernel(
        "raw T blocks, " + _GEOMETRY,
        "T image",
        """
        ptrdiff_t t = i;
        const int n = t % N; t /= N;
        const int w = t % W; t /= W;
        const int h = t % H;
        const int c = t / H;
        T total = 0;
        for (int kh = 0; kh < KH; ++kh) {
            const int hh = h + PH - kh * DH;
            if (hh < 0 || hh % SH != 0 || hh / SH >= OH) continue;
            for (int kw = 0; kw < KW; ++kw) {
                const int ww = w + PW - kw * DW;
                if (ww < 0 || ww % SW != 0 || ww / SW >= OW) continue;
                const ptrdiff_t index[] = {c, kh, kw, hh / SH, ww / SW, n};
                total += blocks[index];
            }
        }
        image = total;
        """,
        "xpnn_col2im",
    )


def im2col_blocks(x, kernel, stride, padding, dilation, output_size):
    """The (C, KH, KW, OH, OW, N) window buffer of an NCHW ``x`` (any strides) in one launch."""
    n, c, h, w = x.shape
    (kh, kw), (oh, ow) = kernel, output_size
    blocks = cupy.empty((c, kh, kw, oh, ow, n), dtype=x.dtype)
    _im2col_kernel()(x, n, c, h, w, oh, ow, kh, kw, *stride, *padding, *dilation, blocks)
    return blocks


def col2im_image(blocks, x_shape, stride, padding, dilation):
    """Sum a (C, KH, KW, OH, OW, N) window buffer back into a batch-last (C, H, W, N) image."""
    n, c, h, w = x_shape
    _, kh, kw, oh, ow, _ = blocks.shape
    image = cupy.empty((c, h, w, n), dtype=blocks.dtype)
    _col2im_kernel()(blocks, n, c, h, w, oh, ow, kh, kw, *stride, *padding, *dilation, image)
    return image

"""Host-side wrappers of ``cuda/windows.cu``: im2col and col2im in Conv2d's batch-last layout, and
the max pool over any geometry. Arrays are allocated with the input's own namespace and kernels
come from a kernel library (CuPy's by default), so the tests run these same functions on NumPy
arrays with the kernels compiled for the CPU."""

import numpy as np

from .. import backend
from . import cuda_launch
from .cuda_launch import element_strides, launch


def _window_args(image_size, kernel, stride, padding, dilation, output_size):
    return tuple(np.int32(v) for v in (*image_size, *output_size, *kernel, *stride, *padding, *dilation))


def im2col_blocks(x, kernel, stride, padding, dilation, output_size, kernels=None):
    """The C-contiguous (C, KH, KW, OH, OW, N) window buffer of an NCHW ``x`` (any strides)."""
    xp = backend.namespace_of(x)
    n, c, h, w = x.shape
    (kh, kw), (oh, ow) = kernel, output_size
    blocks = xp.empty((c, kh, kw, oh, ow, n), dtype=x.dtype, device=backend.device_of(x))
    launch(kernels or cuda_launch.default_kernels(), "windows", "xpnn_im2col", x.dtype, blocks.size, x, blocks, np.int64(blocks.size),
           np.int32(n), *_window_args((h, w), kernel, stride, padding, dilation, output_size), *element_strides(x))
    return blocks


def col2im_image(blocks, x_shape, stride, padding, dilation, kernels=None):
    """Sum a (C, KH, KW, OH, OW, N) window buffer back into a C-contiguous batch-last (C, H, W, N)
    image (the padding cropped), each pixel gathering its own terms."""
    xp = backend.namespace_of(blocks)
    n, c, h, w = x_shape
    _, kh, kw, oh, ow, _ = blocks.shape
    blocks = backend.c_contiguous(blocks)
    image = xp.empty((c, h, w, n), dtype=blocks.dtype, device=backend.device_of(blocks))
    launch(kernels or cuda_launch.default_kernels(), "windows", "xpnn_col2im", blocks.dtype, image.size, blocks, image, np.int64(image.size),
           np.int32(n), *_window_args((h, w), (kh, kw), stride, padding, dilation, (oh, ow)))
    return image


def max_pool(x, kernel, stride, padding, dilation, output_size, order, kernels=None):
    """(maxima, offsets): the NCHW (N, C, OH, OW) window maxima of ``x`` (any strides), laid out
    in memory in the axis ``order`` given (the input's, so a batch-last layout carries on), and
    the int32 row-major offset in each window of its first maximum (last NaN)."""
    xp = backend.namespace_of(x)
    n, c, h, w = x.shape
    oh, ow = output_size
    shape = (n, c, oh, ow)
    inverse = tuple(order.index(axis) for axis in range(4))
    best = xp.permute_dims(xp.empty(tuple(shape[a] for a in order), dtype=x.dtype, device=backend.device_of(x)), inverse)
    which = xp.permute_dims(xp.empty(tuple(shape[a] for a in order), dtype=xp.int32, device=backend.device_of(x)), inverse)
    lowest = np.dtype(backend.dtype_name(x.dtype)).type(-np.inf)
    launch(kernels or cuda_launch.default_kernels(), "windows", "xpnn_max_pool_forward", x.dtype, n * c * oh * ow, x, best, which,
           np.int64(n * c * oh * ow), np.int32(c), *_window_args((h, w), kernel, stride, padding, dilation, output_size), lowest,
           *element_strides(x), *element_strides(best))
    return best, which


def max_pool_backward(grad, which, x_shape, kernel, stride, padding, dilation, order, kernels=None):
    """The input gradient (NCHW, laid out in the axis ``order``) of ``max_pool``: each pixel sums
    the gradients of the windows whose maximum it was. ``grad`` must share ``which``'s strides."""
    xp = backend.namespace_of(grad)
    n, c, h, w = x_shape
    oh, ow = grad.shape[2:]
    inverse = tuple(order.index(axis) for axis in range(4))
    out = xp.permute_dims(xp.empty(tuple(x_shape[a] for a in order), dtype=grad.dtype, device=backend.device_of(grad)), inverse)
    launch(kernels or cuda_launch.default_kernels(), "windows", "xpnn_max_pool_backward", grad.dtype, n * c * h * w, grad, which, out,
           np.int64(n * c * h * w), np.int32(c), *_window_args((h, w), kernel, stride, padding, dilation, (oh, ow)),
           *element_strides(grad), *element_strides(out))
    return out

"""Operations with backend fast paths, one door each.

Each public function here is the only way the layers (``xpnn.nn``) and optimizers
(``xpnn.optim``) reach an operation that has compiled kernels. It chooses, in one place, between
the Numba loops for NumPy (``xpnn.kernels.numba_*``), the CUDA kernels for CuPy
(``xpnn.kernels.cuda/*.cu`` through ``xpnn.kernels.cuda_*``) and the portable Array API version
that sits beside it in the same module (and runs on every other namespace, array_api_strict
included). Operations that have state for their backward pass return ``(output, backward)``,
so the caller never needs to know which path ran. ``docs/design.md`` says how to add one."""

from .activation import relu, relu_mask_backward
from .conv import conv_windows
from .dropout import dropout
from .gemm import matmul
from .layout import add
from .loss import check_labels, softmax_cross_entropy
from .normalization import batch_norm_training
from .pooling import max_pool2d
from .updates import adam_update, sgd_update
from .windows import col2im, col2im_batch_last, conv_output_size, im2col, im2col_batch_last, im2col_rows, pad2d, scatter_windows

__all__ = [
    "add", "matmul", "relu", "relu_mask_backward", "dropout", "conv_windows", "batch_norm_training", "check_labels", "softmax_cross_entropy", "max_pool2d", "adam_update", "sgd_update",
    "im2col", "col2im", "im2col_batch_last", "col2im_batch_last", "im2col_rows", "conv_output_size", "pad2d", "scatter_windows",
]

"""Fused CuPy elementwise kernels: one launch where the portable code makes several passes."""

import functools

import cupy


@functools.cache
def _adam_kernel(amsgrad):
    second = "max_exp_avg_sq" if amsgrad else "exp_avg_sq"
    out_params = "T param, T exp_avg, T exp_avg_sq" + (", T max_exp_avg_sq" if amsgrad else "")
    body = (
        "exp_avg += (1 - beta1) * (grad - exp_avg);\n"
        "exp_avg_sq = beta2 * exp_avg_sq + (1 - beta2) * grad * grad;\n"
        + ("max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq);\n" if amsgrad else "")
        + f"param -= scale * exp_avg / (sqrt({second}) + shifted_eps);\n"
    )
    return cupy.ElementwiseKernel(
        "T grad, T beta1, T beta2, T scale, T shifted_eps", out_params, body, f"xpnn_adam{'_amsgrad' if amsgrad else ''}"
    )


def adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, beta1, beta2, scale, shifted_eps):
    """The Adam step of ``xpnn.optim.updates`` as one kernel launch per parameter."""
    dtype = param.dtype.type
    args = (grad, dtype(beta1), dtype(beta2), dtype(scale), dtype(shifted_eps), param, exp_avg, exp_avg_sq)
    if max_exp_avg_sq is None:
        _adam_kernel(False)(*args)
    else:
        _adam_kernel(True)(*args, max_exp_avg_sq)

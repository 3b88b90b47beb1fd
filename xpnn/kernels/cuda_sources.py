"""The CUDA C++ sources in ``xpnn/kernels/cuda``: their text (each with the shared header
inlined), the kernels each defines, and the template instantiations that are compiled.

One list serves every compiler: CuPy's NVRTC on a GPU (``cuda_launch``), ``nvcc`` in the tests
(every kernel compiled to a cubin for sm_80 and sm_90) and ``g++`` in the tests (every kernel run
on the CPU against a small header that maps CUDA's built-ins to host code)."""

import functools
import re
from pathlib import Path

DIRECTORY = Path(__file__).resolve().parent / "cuda"
SOURCES = ("windows", "activation", "loss", "updates")
# Element types every kernel is instantiated for: NumPy dtype name -> C++ type.
CTYPES = {"float32": "float", "float64": "double"}

_KERNEL = re.compile(r"template <typename T>\s*__global__\s+void\s+(\w+)\s*\(")


_INCLUDE_COMMON = '#include "common.cuh"'


@functools.cache
def source(name):
    """The text of ``cuda/<name>.cu`` with its ``#include "common.cuh"`` replaced by the header's
    text: NVRTC has no file system to search. (nvcc compiles the file itself as well.)"""
    if name not in SOURCES:
        raise KeyError(f"no CUDA source {name!r}; expected one of {', '.join(SOURCES)}")
    text = (DIRECTORY / f"{name}.cu").read_text()
    if _INCLUDE_COMMON not in text:
        raise ValueError(f"cuda/{name}.cu must include common.cuh")
    return text.replace(_INCLUDE_COMMON, (DIRECTORY / "common.cuh").read_text(), 1)


@functools.cache
def kernel_names(name):
    """The kernels (``__global__`` templates over T) that ``cuda/<name>.cu`` defines, in order."""
    return tuple(_KERNEL.findall(source(name)))


def instantiation(kernel, dtype_name):
    """The C++ name of one compiled kernel, e.g. ``xpnn_im2col<float>``."""
    return f"{kernel}<{CTYPES[dtype_name]}>"


def instantiations(name):
    """Every compiled kernel of ``cuda/<name>.cu``: each kernel for each element type."""
    return [instantiation(kernel, dtype) for kernel in kernel_names(name) for dtype in CTYPES]

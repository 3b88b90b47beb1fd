"""Launching xpnn's CUDA kernels: the launch configuration (in one place), the typed kernel
arguments, and the CuPy modules that compile the sources with NVRTC on first use.

A kernel library is any object with ``function(source, kernel, dtype_name)`` returning a callable
``(grid, block, args)`` and a ``max_blocks`` attribute: ``CupyKernels`` on a GPU, and in the tests
a g++ build of the same sources that runs each launch's blocks and threads on the CPU. The
host-side wrappers (``cuda_windows``, ``cuda_elementwise``, ``cuda_losses``) allocate with the
arrays' own namespace and launch through ``launch``, so the tests run them unchanged on NumPy
arrays."""

import functools

import numpy as np

from . import cuda_sources

THREADS_PER_BLOCK = 256
# Enough blocks to fill any current GPU several times over; grid-stride loops cover the rest.
MAX_BLOCKS = 4096


def launch_config(count, max_blocks=MAX_BLOCKS, threads=THREADS_PER_BLOCK):
    """(blocks, threads per block) for ``count`` independent elements: one thread each, up to
    ``max_blocks`` blocks, after which each thread strides over several."""
    blocks = min(max_blocks, -(-count // threads))
    return blocks, threads


def launch(kernels, source, kernel, dtype, count, *args):
    """Run ``kernel`` of ``source`` for element type ``dtype`` over ``count`` elements (nothing
    when there are none). ``args`` are arrays and NumPy scalars whose types match the kernel's
    parameters (np.int32 for int, np.int64 for long long, the element type for T)."""
    if count == 0:
        return
    blocks, threads = launch_config(count, kernels.max_blocks)
    kernels.function(source, kernel, np.dtype(dtype).name)(blocks, threads, args)


def element_strides(a):
    """``a``'s strides in elements, as kernel arguments (np.int64)."""
    return tuple(np.int64(s // a.itemsize) for s in a.strides)


def ctype_supported(dtype):
    """Whether the kernels are compiled for ``dtype`` (float32 and float64)."""
    return np.dtype(dtype).name in cuda_sources.CTYPES


class CupyKernels:
    """The sources compiled by CuPy (NVRTC), one ``cupy.RawModule`` per source, on first use."""

    max_blocks = MAX_BLOCKS

    @functools.cache
    def _module(self, source):
        import cupy

        return cupy.RawModule(code=cuda_sources.source(source), options=("--std=c++14",),
                              name_expressions=cuda_sources.instantiations(source))

    @functools.cache
    def function(self, source, kernel, dtype_name):
        compiled = self._module(source).get_function(cuda_sources.instantiation(kernel, dtype_name))

        def run(blocks, threads, args):
            compiled((blocks,), (threads,), args)

        return run


@functools.cache
def default_kernels():
    """The kernel library the CUDA paths launch on when given none: CuPy's, made once."""
    return CupyKernels()

"""Compilers for xpnn's CUDA sources in the tests: ``nvcc`` to cubins (the GPU's compiler, no GPU
needed) and ``g++`` against ``cuda_host/host_cuda.h`` to a shared library whose kernels run on the
CPU (``HostKernels``, a kernel library for ``xpnn.kernels.cuda_launch.launch``)."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import numpy as np

from xpnn.kernels import cuda_sources

HOST_HEADER = Path(__file__).resolve().parent / "cuda_host" / "host_cuda.h"
NVCC_ARCHS = ("sm_80", "sm_90")


def find_nvcc():
    """The nvcc on PATH or under /usr/local/cuda, or None."""
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.exists() else None


def run_compiler(command):
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, command))} failed:\n{result.stdout}{result.stderr}")
    return result


def nvcc_cubin(nvcc, source, arch, directory):
    """Compile every instantiation of ``source`` for ``arch`` into a cubin, warnings as errors;
    returns the cubin's path."""
    unit = Path(directory) / f"{source}_nvcc.cu"
    taken = ", ".join(f"(void*)&{name}" for name in cuda_sources.instantiations(source))
    unit.write_text(f"{cuda_sources.source(source)}\nvoid* xpnn_instantiate[] = {{{taken}}};\n")
    cubin = Path(directory) / f"{source}_{arch}.cubin"
    run_compiler([nvcc, "-cubin", f"-arch={arch}", "--std=c++14", "--Werror", "all-warnings", "-o", str(cubin), str(unit)])
    return cubin


def gxx_library(source, directory):
    """Build ``source`` for the CPU with g++ (-Wall -Wextra as errors, no FMA contraction, so the
    float operations are the ones written); returns the shared library's path."""
    unit = Path(directory) / f"{source}_host.cpp"
    exports = "\n".join(
        f"XPNN_HOST_EXPORT({kernel}, {ctype})" for kernel in cuda_sources.kernel_names(source) for ctype in cuda_sources.CTYPES.values()
    )
    unit.write_text(f'#include "{HOST_HEADER}"\n{cuda_sources.source(source)}\n{exports}\n')
    library = Path(directory) / f"libxpnn_{source}_host.so"
    run_compiler(["g++", "-std=c++17", "-O2", "-ffp-contract=off", "-fPIC", "-shared", "-Wall", "-Wextra", "-Werror",
          "-Wno-unused-parameter", "-o", str(library), str(unit)])
    return library


_CTYPE_OF_SCALAR = {np.int32: ctypes.c_int32, np.int64: ctypes.c_int64, np.float32: ctypes.c_float, np.float64: ctypes.c_double}


class HostKernels:
    """A kernel library (see ``xpnn.kernels.cuda_launch``) whose kernels run on the CPU: each
    launch runs its blocks and threads one by one. Arguments are NumPy arrays (passed as
    pointers) and NumPy scalars of the kernel's parameter types; anything else is refused, as a
    mistyped argument would be read as garbage."""

    def __init__(self, libraries, max_blocks):
        self._libraries = {name: ctypes.CDLL(str(path)) for name, path in libraries.items()}
        self.max_blocks = max_blocks
        self.launches = []

    def function(self, source, kernel, dtype_name):
        entry = getattr(self._libraries[source], f"{kernel}__{cuda_sources.CTYPES[dtype_name]}")
        entry.argtypes = (ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p))
        entry.restype = None

        def run(blocks, threads, args):
            values = [_host_argument(a) for a in args]
            pointers = (ctypes.c_void_p * len(values))(*[ctypes.cast(ctypes.pointer(v), ctypes.c_void_p) for v in values])
            self.launches.append((kernel, dtype_name, blocks, threads))
            entry(blocks, threads, pointers)

        return run


def _host_argument(value):
    if isinstance(value, np.ndarray):
        return ctypes.c_void_p(value.ctypes.data)
    kind = _CTYPE_OF_SCALAR.get(type(value))
    if kind is None:
        raise TypeError(f"kernel argument of type {type(value).__name__}: expected a NumPy array or a NumPy int32/int64/float32/float64 scalar")
    return kind(value)


def find_gxx():
    """The g++ on PATH, or None."""
    return shutil.which("g++")

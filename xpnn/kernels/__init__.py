"""The compiled kernels behind the doors in ``xpnn.ops``: Numba loops for NumPy
(``numba_*``) and CUDA C++ sources (``cuda/*.cu``) with their host-side launch wrappers
(``cuda_*``). Only ``xpnn.ops`` imports them, lazily, on first use, so importing xpnn imports
neither Numba nor CuPy."""

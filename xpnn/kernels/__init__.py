"""Backend fast paths behind the portable functions they speed up: Numba-compiled loops for NumPy
(``cpu_*``) and CuPy kernels for CUDA. Each is imported lazily, on first use, so importing xpnn
imports neither Numba nor CuPy."""

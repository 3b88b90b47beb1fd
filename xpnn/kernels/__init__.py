"""CuPy-only fast paths (fused elementwise kernels, one-launch im2col/col2im), imported lazily by
the portable functions they speed up, so importing xpnn never imports CuPy."""

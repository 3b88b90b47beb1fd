"""Benchmarks for xpnn: `python -m bench` times training steps and full MNIST epochs of xpnn,
PyTorch and the seed notebooks' NumPy code side by side, and writes a JSON report."""

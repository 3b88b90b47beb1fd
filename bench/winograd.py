"""Which 3x3 stride-1 convolutions does Winograd F(2x2, 3x3) pay on, on NumPy? Times one layer's
forward (window matrix or tiles, then the product with the weight and the bias) and its whole
training step (forward, weight gradient, input gradient), im2col (what ``ops.conv_windows``
chose before) against Winograd (``ops.winograd``), side by side (alternating blocks, median),
float32, at the layer shapes of the benchmark models and around ``WINOGRAD_MIN_CHANNELS``; then
the whole training step of the benchmark models that have such layers, with and without
Winograd, alternating in one process. Run from the repository root: ``python bench/winograd.py``;
writes ``bench/results/winograd.json``."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import mnist, runners  # noqa: E402
from bench.timing import alternate, block_size, cycling, median  # noqa: E402
from xpnn.ops import conv, winograd  # noqa: E402

CASES = [  # (C, O, H, W, N, padding, layer)
    (32, 64, 14, 14, 128, 1, "cnn3264 conv2, batch 128"),
    (32, 64, 26, 26, 64, 0, "torchmnist conv2, batch 64"),
    (16, 16, 32, 32, 128, 1, "resnet20 stage 1, batch 128"),
    (32, 32, 16, 16, 128, 1, "resnet20 stage 2, batch 128"),
    (64, 64, 8, 8, 128, 1, "resnet20 stage 3, batch 128"),
    (8, 8, 28, 28, 64, 1, "8 channels, 28x28, batch 64"),
    (16, 16, 28, 28, 64, 1, "16 channels, 28x28, batch 64"),
    (16, 32, 14, 14, 64, 1, "16 -> 32, 14x14, batch 64"),
    (64, 64, 7, 7, 64, 1, "64 channels, 7x7 (odd), batch 64"),
]


def paths(x, weight, bias, padding, out_size, grad):
    """name -> (forward only, forward + both gradients) for each of the two ways."""
    geometry = ((3, 3), (1, 1), (padding, padding), (1, 1), out_size)
    outputs = weight.shape[1]

    def im2col():  # what ops.conv_windows takes without Winograd (direct or streamed for few outputs)
        kept, conv.WINOGRAD_MIN_CHANNELS = conv.WINOGRAD_MIN_CHANNELS, 10**9
        try:
            return conv.conv_windows(x, *geometry, 1, outputs)
        finally:
            conv.WINOGRAD_MIN_CHANNELS = kept

    def tiles():
        return winograd.WinogradWindows(x, (padding, padding), out_size)

    def step(make):
        windows = make()
        windows.matmul(weight, bias)
        windows.gradients(weight, grad, True)

    return {
        "im2col_forward": lambda: im2col().matmul(weight, bias),
        "winograd_forward": lambda: tiles().matmul(weight, bias),
        "im2col_step": lambda: step(im2col),
        "winograd_step": lambda: step(tiles),
    }


MODELS = (("cnn3264", 128), ("torchmnist", 64), ("resnet20", 128))
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def with_threshold(step, channels):
    """``step`` run with ``ops.conv.WINOGRAD_MIN_CHANNELS`` set to ``channels`` (10**9: never)."""
    def run():
        kept, conv.WINOGRAD_MIN_CHANNELS = conv.WINOGRAD_MIN_CHANNELS, channels
        try:
            step()
        finally:
            conv.WINOGRAD_MIN_CHANNELS = kept
    return run


def model_steps():
    """Median training step of each model in MODELS, im2col only against Winograd where it fits."""
    rows = []
    for model, batch_size in MODELS:
        x, y = runners.training_images(model, batch_size, DATA_DIR)
        batches = mnist.batches(x, y, batch_size, 4)
        tasks = {}
        for name, channels in (("im2col", 10**9), ("winograd", conv.WINOGRAD_MIN_CHANNELS)):
            runner = runners.XpnnRunner(model, batch_size)
            step = with_threshold(cycling(runner.step, [runner.convert(*b) for b in batches]), channels)
            tasks[name] = (step, block_size(step, 3, 0.3), 7)
        ms = {k: median(t) * 1e3 for k, t in alternate(tasks, 7).items()}
        rows.append({"model": model, "batch_size": batch_size, **{f"{k}_step_ms": v for k, v in ms.items()}})
        print(f"{model} batch {batch_size}: step im2col {ms['im2col']:.1f} ms, with Winograd {ms['winograd']:.1f} "
              f"({ms['im2col'] / ms['winograd']:.2f}x)")
    return rows


def main():
    rng = np.random.default_rng(0)
    rows = []
    for c, o, h, w, n, padding, name in CASES:
        x = rng.normal(size=(c, h, w, n)).astype(np.float32).transpose(3, 0, 1, 2)  # batch-last, as layers hand it on
        weight = (rng.normal(size=(1, o, c * 9)) / np.sqrt(c * 9)).astype(np.float32)
        bias = rng.normal(size=o).astype(np.float32)
        out_size = (h + 2 * padding - 2, w + 2 * padding - 2)
        grad = rng.normal(size=(1, o, out_size[0] * out_size[1] * n)).astype(np.float32)
        tasks = paths(x, weight, bias, padding, out_size, grad)
        reference, fast = tasks["im2col_forward"](), tasks["winograd_forward"]()
        error = float(np.abs(fast - reference).max() / np.abs(reference).max())
        ms = {k: median(t) * 1e3 for k, t in alternate({k: (fn, block_size(fn, 2, 0.2), 7) for k, fn in tasks.items()}, 7).items()}
        rows.append({"layer": name, "C": c, "O": o, "H": h, "W": w, "N": n, "padding": padding,
                     "max_relative_error": error, **{f"{k}_ms": v for k, v in ms.items()}})
        print(f"{name:34} forward: im2col {ms['im2col_forward']:6.2f} ms, Winograd {ms['winograd_forward']:6.2f} "
              f"({ms['im2col_forward'] / ms['winograd_forward']:.2f}x); step: im2col {ms['im2col_step']:6.2f}, "
              f"Winograd {ms['winograd_step']:6.2f} ({ms['im2col_step'] / ms['winograd_step']:.2f}x); error {error:.1e}")
    out = Path(__file__).resolve().parent / "results" / "winograd.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"layers": rows, "models": model_steps()}, indent=2))


if __name__ == "__main__":
    main()

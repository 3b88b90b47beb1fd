"""Which 3x3 stride-1 convolutions do Winograd F(2x2, 3x3) and F(4x4, 3x3) pay on, on NumPy?
Times one layer's forward (window matrix or tiles, then the product with the weight and the
bias) and its whole training step (forward, weight gradient, input gradient), im2col (what
``ops.conv_windows`` takes without Winograd) against Winograd with each tile (``ops.winograd``),
side by side (alternating blocks, median), float32, at the layer shapes of the benchmark models
and around ``WINOGRAD_MIN_CHANNELS``; then the whole training step of the benchmark models that
have such layers, without Winograd and with each tile, alternating in one process. Runs on the
thread count ``xpnn.train.default_threads`` gives these models (``--threads N`` for another).
Run from the repository root: ``python bench/winograd.py``; writes
``bench/results/winograd.json``."""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import mnist, runners  # noqa: E402
from bench.timing import alternate, block_size, cycling, median  # noqa: E402
import xpnn  # noqa: E402
from xpnn.ops import conv, winograd  # noqa: E402

TILES = (2, 4)

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
    (32, 32, 7, 7, 128, 1, "32 channels, 7x7 (odd), batch 128"),
    (32, 32, 6, 6, 128, 1, "32 channels, 6x6, batch 128"),
    (64, 64, 4, 4, 128, 1, "64 channels, 4x4, batch 128"),
]


def paths(x, weight, bias, padding, out_size, grad):
    """name -> (forward only, forward + both gradients) for im2col and each Winograd tile."""
    geometry = ((3, 3), (1, 1), (padding, padding), (1, 1), out_size)
    outputs = weight.shape[1]

    def im2col():  # what ops.conv_windows takes without Winograd (direct or streamed for few outputs)
        kept, conv.WINOGRAD_MIN_CHANNELS = conv.WINOGRAD_MIN_CHANNELS, 10**9
        try:
            return conv.conv_windows(x, *geometry, 1, outputs)
        finally:
            conv.WINOGRAD_MIN_CHANNELS = kept

    def tiles(m):
        return lambda: winograd.WinogradWindows(x, (padding, padding), out_size, m)

    def step(make):
        windows = make()
        windows.matmul(weight, bias)
        windows.gradients(weight, grad, True)

    makers = {"im2col": im2col, **{f"winograd{m}": tiles(m) for m in TILES}}
    timed = {}
    for name, make in makers.items():
        timed[f"{name}_forward"] = lambda make=make: make().matmul(weight, bias)
        timed[f"{name}_step"] = lambda make=make: step(make)
    return timed


MODELS = (("cnn3264", 128), ("torchmnist", 64), ("resnet20", 128))
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def with_door(step, channels, tile):
    """``step`` run with ``ops.conv.WINOGRAD_MIN_CHANNELS`` set to ``channels`` (10**9: never)
    and ``ops.conv.WINOGRAD_TILE`` to ``tile``."""
    def run():
        kept = conv.WINOGRAD_MIN_CHANNELS, conv.WINOGRAD_TILE
        conv.WINOGRAD_MIN_CHANNELS, conv.WINOGRAD_TILE = channels, tile
        try:
            step()
        finally:
            conv.WINOGRAD_MIN_CHANNELS, conv.WINOGRAD_TILE = kept
    return run


def model_steps():
    """Median training step of each model in MODELS, im2col only against Winograd with each tile
    where the door takes it."""
    rows = []
    for model, batch_size in MODELS:
        x, y = runners.training_images(model, batch_size, DATA_DIR)
        batches = mnist.batches(x, y, batch_size, 4)
        tasks = {}
        doors = [("im2col", 10**9, conv.WINOGRAD_TILE)] + [(f"winograd{m}", conv.WINOGRAD_MIN_CHANNELS, m) for m in TILES]
        for name, channels, tile in doors:
            runner = runners.XpnnRunner(model, batch_size)
            step = with_door(cycling(runner.step, [runner.convert(*b) for b in batches]), channels, tile)
            tasks[name] = (step, block_size(step, 3, 0.3), 7)
        ms = {k: median(t) * 1e3 for k, t in alternate(tasks, 7).items()}
        rows.append({"model": model, "batch_size": batch_size, **{f"{k}_step_ms": v for k, v in ms.items()}})
        print(f"{model} batch {batch_size}: step im2col {ms['im2col']:.1f} ms, "
              + ", ".join(f"F({m}x{m}, 3x3) {ms[f'winograd{m}']:.1f} ({ms['im2col'] / ms[f'winograd{m}']:.2f}x)" for m in TILES),
              flush=True)
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="xpnn threads (default: what xpnn.train.default_threads gives a wide convolution)")
    args = parser.parse_args()
    xpnn.set_num_threads(args.threads or xpnn.train.default_threads(xpnn.nn.Conv2d(16, 16, 3)))
    print(f"xpnn threads: {xpnn.get_num_threads()}")
    rng = np.random.default_rng(0)
    rows = []
    for c, o, h, w, n, padding, name in CASES:
        x = rng.normal(size=(c, h, w, n)).astype(np.float32).transpose(3, 0, 1, 2)  # batch-last, as layers hand it on
        weight = (rng.normal(size=(1, o, c * 9)) / np.sqrt(c * 9)).astype(np.float32)
        bias = rng.normal(size=o).astype(np.float32)
        out_size = (h + 2 * padding - 2, w + 2 * padding - 2)
        grad = rng.normal(size=(1, o, out_size[0] * out_size[1] * n)).astype(np.float32)
        tasks = paths(x, weight, bias, padding, out_size, grad)
        reference = tasks["im2col_forward"]()
        errors = {f"winograd{m}_max_relative_error": float(np.abs(winograd.WinogradWindows(x, (padding, padding), out_size, m)
                                                                  .matmul(weight, bias) - reference).max() / np.abs(reference).max())
                  for m in TILES}
        ms = {k: median(t) * 1e3 for k, t in alternate({k: (fn, block_size(fn, 2, 0.2), 7) for k, fn in tasks.items()}, 7).items()}
        rows.append({"layer": name, "C": c, "O": o, "H": h, "W": w, "N": n, "padding": padding,
                     **errors, **{f"{k}_ms": v for k, v in ms.items()}})
        print(f"{name:34} im2col forward {ms['im2col_forward']:6.2f} ms, step {ms['im2col_step']:6.2f}; "
              + "; ".join(f"F({m}x{m}, 3x3) {ms[f'winograd{m}_forward']:6.2f} "
                          f"({ms['im2col_forward'] / ms[f'winograd{m}_forward']:.2f}x), step {ms[f'winograd{m}_step']:6.2f} "
                          f"({ms['im2col_step'] / ms[f'winograd{m}_step']:.2f}x), error {errors[f'winograd{m}_max_relative_error']:.0e}"
                          for m in TILES), flush=True)
    out = Path(__file__).resolve().parent / "results" / "winograd.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"threads": xpnn.get_num_threads(), "layers": rows, "models": model_steps()}, indent=2))


if __name__ == "__main__":
    main()

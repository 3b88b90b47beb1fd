"""Does a 1x1 convolution gain from taking its batch-last input as the window matrix
(``ops.conv.PointwiseWindows``) instead of what ``ops.conv_windows`` took for it before (the
direct convolution for few outputs, streamed row pieces for a few more, else im2col's window
matrix and col2im)? Times a layer's forward and its training step (forward, weight and input
gradients) both ways, side by side (alternating blocks, median), float32, on NumPy, at the shapes
of bottleneck and option-B shortcut layers and of few-output ones, on xpnn's threads as
``Trainer`` would choose them. Run from the repository root:
``python bench/pointwise.py``; writes ``bench/results/pointwise.json``."""

import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.timing import alternate, block_size, median  # noqa: E402
import xpnn  # noqa: E402
from xpnn.ops import conv  # noqa: E402

CASES = [  # (C, O, H, W, N)
    (64, 64, 16, 16, 128),
    (16, 64, 32, 32, 128),
    (256, 64, 8, 8, 128),
    (32, 128, 14, 14, 64),
    (16, 4, 28, 28, 64),
    (64, 8, 16, 16, 128),
]


def before(x, outputs, geometry):
    """The windows ``ops.conv_windows`` took for a 1x1, stride-1, unpadded layer before
    PointwiseWindows, and their name."""
    if conv.direct_fits(x.shape[1], outputs):
        return "direct", conv.DirectWindows(x, (1, 1), (0, 0), geometry[-1])
    if outputs <= conv.STREAM_MAX_OUTPUTS:
        return "streamed", conv.StreamedWindows(x, *geometry, 1)
    return "im2col", conv.WindowMatrix(x, *geometry, 1)


def main():
    xpnn.set_num_threads(xpnn.train.default_threads(xpnn.nn.Conv2d(16, 16, 1)))
    rng = np.random.default_rng(0)
    rows = []
    for c, o, h, w, n in CASES:
        x = rng.normal(size=(c, h, w, n)).astype(np.float32).transpose(3, 0, 1, 2)  # batch-last, as layers hand it on
        weight = (rng.normal(size=(1, o, c)) / np.sqrt(c)).astype(np.float32)
        bias = rng.normal(size=o).astype(np.float32)
        grad = rng.normal(size=(1, o, h * w * n)).astype(np.float32)
        geometry = ((1, 1), (1, 1), (0, 0), (1, 1), (h, w))

        def step(make):
            windows = make()
            windows.matmul(weight, bias)
            windows.gradients(weight, grad, True)

        kind, _ = before(x, o, geometry)
        makers = {"before": lambda: before(x, o, geometry)[1], "pointwise": lambda: conv.PointwiseWindows(x, 1)}
        tasks = {}
        for name, make in makers.items():
            tasks[f"{name}_forward"] = lambda make=make: make().matmul(weight, bias)
            tasks[f"{name}_step"] = lambda make=make: step(make)
        ms = {k: median(t) * 1e3 for k, t in alternate({k: (f, block_size(f, 2, 0.2), 7) for k, f in tasks.items()}, 7).items()}
        rows.append({"C": c, "O": o, "H": h, "W": w, "N": n, "before": kind, **{f"{k}_ms": v for k, v in ms.items()}})
        print(f"{c:4} -> {o:4}, {h}x{w}, batch {n}: forward {kind} {ms['before_forward']:6.2f} ms, pointwise "
              f"{ms['pointwise_forward']:6.2f} ({ms['before_forward'] / ms['pointwise_forward']:.2f}x); step {kind} "
              f"{ms['before_step']:6.2f}, pointwise {ms['pointwise_step']:6.2f} ({ms['before_step'] / ms['pointwise_step']:.2f}x)",
              flush=True)
    out = Path(__file__).resolve().parent / "results" / "pointwise.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"threads": xpnn.get_num_threads(), "layers": rows}, indent=2))


if __name__ == "__main__":
    main()

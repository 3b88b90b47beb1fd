"""Does splitting a step over xpnn's own threads (``xpnn.threads``, NumPy's BLAS held to one
thread) beat leaving the threads to BLAS? Three measurements, each alternating in one process:

1. Why BLAS's threads are not enough: a Numba loop split over two threads, alone and right after
   a two-thread BLAS GEMM (whose idle worker then spins on the second core), against the same loop
   on one thread.
2. What a split GEMM gains: two one-thread products at once against one, by size (the pool's
   hand-off and BLAS's per-call costs make small ones lose; ``ops.gemm.SPLIT_MIN_MACS``).
3. Each benchmark model's training step with ``xpnn.set_num_threads(1)`` (BLAS's threads) against
   ``set_num_threads(2)``, and what ``Trainer`` chooses for it.

Run from the repository root: ``python bench/threads.py``; writes ``bench/results/threads.json``."""

import json
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import mnist, runners  # noqa: E402
from bench.timing import alternate, block_size, cycling, median  # noqa: E402
import xpnn  # noqa: E402
from xpnn import threads  # noqa: E402
from xpnn.train import default_threads  # noqa: E402
from xpnn.kernels import numba_winograd  # noqa: E402

MODELS = (("mlp", 64), ("cnn", 64), ("lenet", 128), ("cnn3264", 128), ("torchmnist", 64), ("resnet20", 128))
DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
COUNT = 2


def spinning_worker():
    """ResNet-20's first-stage input transform (16 channels, 32x32, batch 128) on one thread and
    split over two (a thread of its own, BLAS not limited), alone and after a two-thread 512x512
    GEMM."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(16, 34, 34, 128)).astype(np.float32)
    tiles = np.empty((16, 16, 16, 16, 128), np.float32)
    square = rng.normal(size=(512, 512)).astype(np.float32)
    helper = ThreadPoolExecutor(1)

    def one():
        numba_winograd.input_tiles(image, (0, 16), (0, 16), tiles)

    def two():
        other = helper.submit(numba_winograd.input_tiles, image[8:], (0, 16), (0, 16), tiles[:, 8:])
        numba_winograd.input_tiles(image[:8], (0, 16), (0, 16), tiles[:, :8])
        other.result()

    tasks = {
        "transform, one thread": (one, 20, 7),
        "transform, two threads": (two, 20, 7),
        "GEMM (two BLAS threads) + transform on one": (lambda: (square @ square, one()), 20, 7),
        "GEMM (two BLAS threads) + transform on two": (lambda: (square @ square, two()), 20, 7),
        "GEMM (two BLAS threads) alone": (lambda: square @ square, 20, 7),
    }
    ms = {k: median(t) * 1e3 for k, t in alternate(tasks, 7, pause=0.3).items()}  # the pause lets BLAS's workers sleep
    helper.shutdown()
    for name, value in ms.items():
        print(f"  {name:48} {value:6.2f} ms")
    return ms


def split_products():
    """n x n x n products: one on one BLAS thread, against two at once on xpnn's two threads."""
    rng = np.random.default_rng(0)
    rows = []
    for n in (128, 192, 256, 384, 512):
        a, b = rng.normal(size=(n, n)).astype(np.float32), rng.normal(size=(n, n)).astype(np.float32)
        pair = lambda: threads.run(lambda s, e: (a if s == 0 else b) @ (a if s == 0 else b), [(0, 1), (1, 2)])  # noqa: E731
        xpnn.set_num_threads(COUNT)
        try:
            ms = {k: median(t) * 1e3 for k, t in alternate({"one": (lambda: a @ a, 50, 7), "two at once": (pair, 50, 7)}, 7).items()}
        finally:
            xpnn.set_num_threads(1)
        efficiency = 2 * ms["one"] / ms["two at once"]
        rows.append({"n": n, "macs": n ** 3, "one_ms": ms["one"], "two_at_once_ms": ms["two at once"], "efficiency": efficiency})
        print(f"  {n:4}^3 ({n ** 3 / 1e6:5.1f} M multiply-adds): one {ms['one']:.3f} ms, two at once {ms['two at once']:.3f} ms "
              f"-> {efficiency:.2f} of two cores")
    return rows


def model_steps():
    rows = []
    for model, batch_size in MODELS:
        x, y = runners.training_images(model, batch_size, DATA_DIR)
        batches = mnist.batches(x, y, batch_size, 4)
        tasks = {}
        for count in (1, COUNT):  # each runner's step sets its own count first
            runner = runners.XpnnRunner(model, batch_size, threads=count)
            step = cycling(runner.step, [runner.convert(*b) for b in batches])
            tasks[count] = (step, block_size(step, 3, 0.3), 7)
        ms = {k: median(t) * 1e3 for k, t in alternate(tasks, 7).items()}
        xpnn.set_num_threads(1)
        chosen = default_threads(runner.model)
        rows.append({"model": model, "batch_size": batch_size, "one_thread_ms": ms[1], "two_threads_ms": ms[COUNT], "trainer_threads": chosen})
        print(f"  {model} batch {batch_size}: BLAS's threads {ms[1]:.2f} ms, xpnn's {COUNT} threads {ms[COUNT]:.2f} ms "
              f"({ms[1] / ms[COUNT]:.2f}x); Trainer chooses {chosen}")
    return rows


def main():
    print("1. a split Numba loop, alone and after a two-thread GEMM")
    spin = spinning_worker()
    print("2. two one-thread GEMMs at once")
    products = split_products()
    print("3. training steps")
    steps = model_steps()
    out = Path(__file__).resolve().parent / "results" / "threads.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"spinning_worker_ms": spin, "split_products": products, "model_steps": steps}, indent=2))


if __name__ == "__main__":
    main()

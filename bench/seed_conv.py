"""How much faster is one xpnn training step of the seed CNN than the seed notebook's loops?

The seed notebook convolves with four nested Python loops over output pixels (float64) and
back-propagates with the same loops. This script times one training step of the seed CNN
(Conv(1, 8, 3, padding 1) + ReLU + Linear(6272, 128) + ReLU + Linear(128, 10) + softmax
cross-entropy + SGD) written that way against one xpnn step of the same model on the same batches
of 64 real MNIST training images, checks that the two convolutions agree, prints both times and
the ratio, and writes bench/results/seed_conv.json.

Run from the repository root: ``python bench/seed_conv.py [--threads N]`` (about 20 s on two
cores). BLAS runs single-threaded unless ``--threads`` or OPENBLAS_NUM_THREADS says otherwise:
on a small shared machine multi-threaded OpenBLAS can be 100x slower on these small GEMMs when
another process holds a core, which would measure the neighbours rather than the code.
"""

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def _blas_threads():
    """Parse --threads and export it to the BLAS libraries before NumPy is imported."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=None, help="BLAS threads (default: OPENBLAS_NUM_THREADS, else 1)")
    args = parser.parse_args()
    threads = args.threads or int(os.environ.get("OPENBLAS_NUM_THREADS", "1"))
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    return threads


BLAS_THREADS = _blas_threads() if __name__ == "__main__" else None

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import xpnn
from xpnn import nn, optim

MNIST = ROOT.parent / "shared" / "data" / "mnist"
BATCH = 64
NAIVE_BATCHES = 3  # each naive step takes seconds
XPNN_STEPS = 20
LR = 0.01


def load_mnist(count):
    """The first ``count`` training images (N, 1, 28, 28) scaled to [0, 1], and their labels."""
    with gzip.open(MNIST / "train-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)[:count]
    with gzip.open(MNIST / "train-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:count]
    return images.astype(np.float32) / 255.0, labels.astype(np.int64)


# ---- the seed notebook's way: loops over output pixels, float64 --------------------------------


def naive_conv_forward(x, w, b):
    """3x3 convolution with padding 1, one output pixel at a time."""
    n_batch, _, h, width = x.shape
    out_channels = w.shape[0]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n_batch, out_channels, h, width))
    for n in range(n_batch):
        for oc in range(out_channels):
            for i in range(h):
                for j in range(width):
                    out[n, oc, i, j] = np.sum(padded[n, :, i:i + 3, j:j + 3] * w[oc]) + b[oc]
    return out


def naive_conv_backward(x, w, grad):
    """Gradients of the loop convolution with respect to w and b (the input is the image, so the
    notebook skips its gradient), by the same four loops."""
    n_batch, _, h, width = x.shape
    out_channels = w.shape[0]
    padded = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    grad_w = np.zeros_like(w)
    grad_b = np.zeros(out_channels)
    for n in range(n_batch):
        for oc in range(out_channels):
            for i in range(h):
                for j in range(width):
                    g = grad[n, oc, i, j]
                    grad_w[oc] += g * padded[n, :, i:i + 3, j:j + 3]
                    grad_b[oc] += g
    return grad_w, grad_b


class NaiveSeedCNN:
    """The seed CNN as a notebook writes it: float64 arrays and hand-written backward."""

    def __init__(self, state):
        # the notebook keeps Linear weights (in, out); xpnn's state_dict has PyTorch's (out, in)
        self.p = {k: np.array(v.T if v.ndim == 2 else v, dtype=np.float64) for k, v in state.items()}

    def step(self, x, labels):
        p = self.p
        conv = naive_conv_forward(x, p["0.weight"], p["0.bias"])
        a1 = np.maximum(conv, 0)
        flat = a1.reshape(len(x), -1)
        h = flat @ p["3.weight"] + p["3.bias"]
        a2 = np.maximum(h, 0)
        logits = a2 @ p["5.weight"] + p["5.bias"]
        shifted = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
        loss = -np.mean(np.log(probs[np.arange(len(x)), labels]))
        d_logits = probs.copy()
        d_logits[np.arange(len(x)), labels] -= 1
        d_logits /= len(x)
        grads = {"5.weight": a2.T @ d_logits, "5.bias": d_logits.sum(axis=0)}
        d_h = (d_logits @ p["5.weight"].T) * (h > 0)
        grads["3.weight"] = flat.T @ d_h
        grads["3.bias"] = d_h.sum(axis=0)
        d_conv = (d_h @ p["3.weight"].T).reshape(a1.shape) * (conv > 0)
        grads["0.weight"], grads["0.bias"] = naive_conv_backward(x, p["0.weight"], d_conv)
        for name, grad in grads.items():
            p[name] -= LR * grad
        return loss, conv


def seed_cnn():
    xpnn.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(),
        nn.Linear(8 * 28 * 28, 128), nn.ReLU(), nn.Linear(128, 10),
    )


def xpnn_step(model, loss_fn, opt, x, y, params_only=False):
    """One step as the Trainer does it; ``params_only`` skips the (unused) gradient of the images."""
    loss = loss_fn(model(x), y)
    opt.zero_grad()
    if params_only:
        model.backward_params(loss_fn.backward())
    else:
        model.backward(loss_fn.backward())
    opt.step()
    return loss


def time_xpnn(model, loss_fn, opt, batches, params_only):
    times = []
    for step in range(XPNN_STEPS + 2):
        x, y = batches[step % len(batches)]
        start = time.perf_counter()
        xpnn_step(model, loss_fn, opt, x, y, params_only)
        if step >= 2:  # warm-up
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    images, labels = load_mnist(BATCH * NAIVE_BATCHES)
    batches = [(images[i:i + BATCH], labels[i:i + BATCH]) for i in range(0, len(images), BATCH)]

    model = seed_cnn()
    naive = NaiveSeedCNN(model.state_dict())
    # The two convolutions agree before we time them.
    reference = model[0](batches[0][0])
    _, conv = naive.step(batches[0][0].astype(np.float64), batches[0][1])
    np.testing.assert_allclose(conv, reference, rtol=1e-4, atol=1e-5)
    naive = NaiveSeedCNN(model.state_dict())

    naive_times = []
    for x, y in batches:
        start = time.perf_counter()
        naive.step(x.astype(np.float64), y)
        naive_times.append(time.perf_counter() - start)
        print(f"naive step: {naive_times[-1]:.2f} s", flush=True)

    loss_fn = nn.CrossEntropyLoss()
    opt = optim.SGD(model.parameters(), lr=LR)
    xpnn_s = time_xpnn(model, loss_fn, opt, batches, params_only=False)
    params_only_s = time_xpnn(model, loss_fn, opt, batches, params_only=True)

    naive_s = statistics.median(naive_times)
    ratio = naive_s / xpnn_s
    print(f"seed notebook loops (float64): {naive_s * 1e3:9.1f} ms per step of {BATCH} (median of {len(naive_times)})")
    print(f"xpnn im2col + GEMM (float32):  {xpnn_s * 1e3:9.1f} ms per step of {BATCH} (median of {XPNN_STEPS}; "
          f"{params_only_s * 1e3:.1f} ms with backward_params)")
    print(f"speed-up: {ratio:.0f}x  (BLAS threads: {BLAS_THREADS}, load average {os.getloadavg()[0]:.1f})")
    result = {
        "benchmark": "seed CNN training step, batch of 64 MNIST images, CPU",
        "model": "Conv2d(1, 8, 3, padding=1) + ReLU + Flatten + Linear(6272, 128) + ReLU + Linear(128, 10), softmax CE, SGD",
        "naive_loops_float64_s": naive_s,
        "naive_steps": naive_times,
        "xpnn_float32_s": xpnn_s,
        "xpnn_backward_params_s": params_only_s,
        "xpnn_steps": XPNN_STEPS,
        "speedup": ratio,
        "blas_threads": BLAS_THREADS,
        "load_average": os.getloadavg(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
    }
    out = Path(__file__).resolve().parent / "results" / "seed_conv.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()

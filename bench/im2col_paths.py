"""Which window layout and which copies make im2col and col2im fastest on NumPy? Times, side by
side (alternating, median of 40): im2col batch-last as xpnn does it (``xpnn.ops.windows.im2col_batch_last``:
one compiled pass), the same by the portable loop (KH*KW strided copies of OW*N-long runs), by
one ``as_strided`` view of all windows copied once, and batch-first as Chainer lays it out
(KH*KW copies of OW-long runs; xpnn's layout before); and col2im, batch-last, compiled (Numba)
against the portable loop. Inputs are laid out as the layer would receive them: NCHW data for a
first layer, a batch-last conv output after it. Beware: each task runs after the same neighbour
in every round, and ones that follow a large allocation were measured up to 2x faster than the
same code elsewhere in the list, so trust whole-step comparisons over these.
Run from the repository root: ``python bench/im2col_paths.py``."""

import json
import sys
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.timing import alternate, median  # noqa: E402
from xpnn.ops import windows as W  # noqa: E402

CASES = [  # (N, C, H, W), kernel, padding, input layout
    ((128, 1, 28, 28), 5, 2, "NCHW"),  # LeNet conv1
    ((128, 6, 14, 14), 5, 0, "batch-last"),  # LeNet conv2
    ((64, 1, 28, 28), 3, 1, "NCHW"),  # seed CNN
    ((64, 32, 14, 14), 3, 1, "batch-last"),
]


def batch_first(x, k, p):
    """The (C, KH, KW, N, OH, OW) buffer from the padded (C, N, Hp, Wp) image."""
    n, c, h, w = x.shape
    oh, ow = h + 2 * p - k + 1, w + 2 * p - k + 1
    image = W.pad2d(np.permute_dims(x, (1, 0, 2, 3)), p)
    buf = np.empty((c, k, k, n, oh, ow), dtype=x.dtype)
    for i in range(k):
        for j in range(k):
            buf[:, i, j] = image[:, :, i:i + oh, j:j + ow]
    return buf.reshape(c * k * k, -1)


def portable(x, k, p):
    """The batch-last buffer by the portable loop: one strided copy per kernel offset."""
    image = W.padded_batch_last(x, (p, p))
    c, hp, wp, n = image.shape
    oh, ow = hp - k + 1, wp - k + 1
    out = np.empty((c, k, k, oh, ow, n), dtype=x.dtype)
    return W.im2col_rows_portable(image, (k, k), (1, 1), (1, 1), (0, oh), ow, out).reshape(c * k * k, -1)


def strided(x, k, p):
    """The batch-last buffer as one as_strided view of the padded (C, Hp, Wp, N) image, copied once."""
    image = W.padded_batch_last(x, (p, p))
    c, hp, wp, n = image.shape
    oh, ow = hp - k + 1, wp - k + 1
    s_c, s_h, s_w, s_n = image.strides
    view = as_strided(image, (c, k, k, oh, ow, n), (s_c, s_h, s_w, s_h, s_w, s_n), writeable=False)
    return np.reshape(view, (c * k * k, -1))


def main():
    rng = np.random.default_rng(0)
    rows = []
    for shape, k, p, layout in CASES:
        x = rng.normal(size=shape).astype(np.float32)
        if layout == "batch-last":
            x = np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
        cols = W.im2col_batch_last(x, k, padding=p)
        np.testing.assert_array_equal(strided(x, k, p), cols)
        np.testing.assert_array_equal(portable(x, k, p), cols)
        padded = tuple(s + 2 * p for s in shape[2:])
        blocks = cols.reshape(shape[1], k, k, padded[0] - k + 1, padded[1] - k + 1, shape[0])
        tasks = {
            "batch_last": lambda: W.im2col_batch_last(x, k, padding=p),
            "portable": lambda: portable(x, k, p),
            "as_strided": lambda: strided(x, k, p),
            "batch_first": lambda: batch_first(x, k, p),
            "col2im_compiled": lambda: W.col2im_batch_last(cols, shape, k, padding=p),
            "col2im_portable": lambda: W.col2im_image_portable(blocks, padded, (1, 1), (1, 1)),
        }
        for fn in tasks.values():
            fn()
        times = alternate({name: (fn, 5, 8) for name, fn in tasks.items()}, 8)
        ms = {name: median(t) * 1e3 for name, t in times.items()}
        rows.append({"shape": shape, "kernel": k, "padding": p, "input": layout, **{f"{n}_ms": v for n, v in ms.items()}})
        print(f"{shape!s:18} k={k} p={p} {layout:10}: im2col batch-last {ms['batch_last']:5.2f} ms, portable "
              f"{ms['portable']:5.2f}, as_strided "
              f"{ms['as_strided']:5.2f}, batch-first {ms['batch_first']:5.2f}; col2im compiled {ms['col2im_compiled']:5.2f}, "
              f"portable {ms['col2im_portable']:5.2f}")
    out = Path(__file__).resolve().parent / "results" / "im2col_paths.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

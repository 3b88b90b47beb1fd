"""Is a NumPy-specific im2col (one ``as_strided`` window view, one copy, no Python loop) faster
than the portable loop over kernel offsets that ``xpnn.functional.im2col`` uses? Both build the
same (C*KH*KW, N*OH*OW) buffer. Run from the repository root: ``python bench/im2col_paths.py``.
Prints median milliseconds per call; xpnn keeps the fast path only where it wins."""

import json
import sys
import time
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import as_strided

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from xpnn import functional as F

CASES = [  # (N, C, H, W), kernel, stride, padding, dilation
    ((64, 8, 28, 28), 3, 1, 1, 1),
    ((64, 1, 28, 28), 3, 1, 1, 1),
    ((64, 6, 14, 14), 5, 1, 0, 1),
    ((64, 8, 28, 28), 3, 2, 1, 1),
    ((64, 32, 14, 14), 3, 1, 1, 1),
]


def im2col_strided(x, kernel_size, stride=1, padding=0, dilation=1):
    """The as_strided candidate: a (C, KH, KW, N, OH, OW) view of the padded channel-major image
    copied in one call."""
    (kh, kw), (sh, sw), padding, (dh, dw) = (F.as_pair(a, "g") for a in (kernel_size, stride, padding, dilation))
    n, c = x.shape[:2]
    oh, ow = F.conv_output_size(x.shape[2:], (kh, kw), (sh, sw), padding, (dh, dw))
    image = F.pad2d(np.permute_dims(x, (1, 0, 2, 3)), padding)
    s_c, s_n, s_h, s_w = image.strides
    view = as_strided(image, (c, kh, kw, n, oh, ow), (s_c, s_h * dh, s_w * dw, s_n, s_h * sh, s_w * sw), writeable=False)
    return np.reshape(view, (c * kh * kw, n * oh * ow)).T


def median_ms(fn, repeat=40):
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def main():
    rng = np.random.default_rng(0)
    rows = []
    for shape, k, s, p, d in CASES:
        x = rng.normal(size=shape).astype(np.float32)
        np.testing.assert_array_equal(im2col_strided(x, k, s, p, d), F.im2col(x, k, s, p, d))
        geometry = (k, s, p, d)
        portable = median_ms(lambda x=x, g=geometry: F.im2col(x, *g))
        strided = median_ms(lambda x=x, g=geometry: im2col_strided(x, *g))
        cols = np.ascontiguousarray(F.im2col(x, *geometry).T).T
        back = median_ms(lambda c=cols, shape=shape, g=geometry: F.col2im(c, shape, *g))
        rows.append({"shape": shape, "kernel": k, "stride": s, "padding": p, "dilation": d,
                     "portable_ms": portable, "as_strided_ms": strided, "col2im_ms": back})
        print(f"{shape!s:18} k={k} s={s} p={p} d={d}: im2col portable {portable:6.2f} ms, as_strided {strided:6.2f} ms; col2im {back:6.2f} ms")
    out = Path(__file__).resolve().parent / "results" / "im2col_paths.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()

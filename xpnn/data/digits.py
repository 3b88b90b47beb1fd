"""The 8x8 UCI handwritten digits, shipped in ``digits.npz`` so examples and tests run with no download.

Source: E. Alpaydin and C. Kaynak, "Optical Recognition of Handwritten Digits", UCI Machine Learning
Repository (1998), https://doi.org/10.24432/C50P49, licensed CC BY 4.0. The file holds the 1,797
images of its test part as distributed by scikit-learn's ``load_digits()`` (uint8, values 0..16,
labels 0..9). There is no official split: the rows were permuted once with
``numpy.random.default_rng(0).permutation(1797)``; the first 1,437 form "train", the last 360 "test".
"""

from pathlib import Path

import numpy as np

PATH = Path(__file__).with_name("digits.npz")


def load_digits(split):
    """(images uint8 (N, 8, 8), labels uint8 (N,)) of ``split``, "train" or "test"."""
    with np.load(PATH) as data:
        return data[f"{split}_images"], data[f"{split}_labels"]

"""Datasets for xpnn: an IDX reader/writer, a registry of datasets (MNIST, Fashion-MNIST, KMNIST and
the bundled 8x8 digits) with checksummed downloads, and a DataLoader that yields device batches."""

from .datasets import Dataset, download, load_dataset
from .idx import read_idx, write_idx
from .loader import DataLoader
from .registry import DATASETS

__all__ = ["DATASETS", "DataLoader", "Dataset", "download", "load_dataset", "read_idx", "write_idx"]

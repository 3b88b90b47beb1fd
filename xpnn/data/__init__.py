"""Datasets for xpnn: an IDX reader/writer, a registry of datasets (MNIST, Fashion-MNIST, KMNIST, the
bundled 8x8 digits, and CIFAR-10/100 from their binary archives) with checksummed downloads, a
DataLoader that yields device batches, and device-side augmentation (``xpnn.data.transforms``)."""

from . import transforms
from .datasets import Dataset, download, load_dataset
from .idx import read_idx, write_idx
from .loader import DataLoader
from .registry import DATASETS
from .transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, default_transforms

__all__ = [
    "DATASETS", "Compose", "DataLoader", "Dataset", "Normalize", "RandomCrop", "RandomHorizontalFlip",
    "default_transforms", "download", "load_dataset", "read_idx", "transforms", "write_idx",
]

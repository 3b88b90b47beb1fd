"""Load a registered dataset by name into a :class:`Dataset`: find its files, download what is
missing, read and check them, and hand out normalised arrays ready for a model."""

import numbers
from dataclasses import dataclass

import numpy as np

from ..errors import DataError, MissingDataError
from .cifar import load_records, locate
from .digits import PATH as DIGITS_PATH
from .digits import load_digits
from .fetch import download_files, missing_message
from .folders import data_dirs
from .idx import read_idx
from .registry import dataset_info


@dataclass(frozen=True, eq=False)
class Dataset:
    """One split of a dataset held in host memory: ``images`` uint8, (N, H, W) grey or (N, C, H, W)
    colour (channels first, as the CIFAR records hold them); ``labels`` int64 (N,).

    ``pixel_max`` is the value of a full-intensity pixel; ``mean``/``std`` normalise the scaled
    pixels (the training split's statistics, used for both splits): one float, or one per channel.
    """

    name: str
    split: str
    images: np.ndarray
    labels: np.ndarray
    classes: tuple
    pixel_max: float = 255.0
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        where = f"{self.name} ({self.split})"
        if self.images.ndim not in (3, 4):
            raise DataError(f"{where}: expected images of shape (N, H, W) or (N, C, H, W), found {self.images.shape}")
        if 0 in self.images.shape:
            n, *size = self.images.shape
            raise DataError(
                f"{where}: expected at least one image of at least 1x1 pixels to train or evaluate on, found {n} images of {_size_text(size)}"
            )
        for stat in ("mean", "std"):
            value = getattr(self, stat)
            if not isinstance(value, numbers.Real) and len(value) != self.channels:
                raise DataError(f"{where}: expected {stat} to be one float or one per channel ({self.channels}), found {value!r}")
        if not self.classes:
            raise DataError(f"{where}: expected at least one class, found none")
        if self.labels.shape != (len(self.images),):
            raise DataError(f"{where}: expected {len(self.images)} labels (one per image), found shape {self.labels.shape}")
        if not 0 <= self.labels.min() <= self.labels.max() < len(self.classes):
            bad = self.labels[(self.labels < 0) | (self.labels >= len(self.classes))]
            raise DataError(f"{where}: expected labels in 0..{len(self.classes) - 1}, found {bad[0]} ({len(bad)} out of range)")

    @property
    def channels(self):
        """1 for grey (N, H, W) images, else C of (N, C, H, W)."""
        return 1 if self.images.ndim == 3 else self.images.shape[1]

    @property
    def image_shape(self):
        """(C, H, W) of one image as :meth:`arrays` gives it (C is 1 for grey images)."""
        return (self.channels, *self.images.shape[-2:])

    def __len__(self):
        return len(self.labels)

    def __repr__(self):
        h, w = self.images.shape[-2:]
        colour = f" of {self.channels} channels" if self.images.ndim == 4 else ""
        return f"Dataset({self.name!r}, split={self.split!r}, {len(self)} images of {h}x{w}{colour}, {len(self.classes)} classes)"

    def arrays(self, flatten=False, normalize=True):
        """(x, y): x float32, scaled to [0, 1] then normalised channel by channel by ``mean``/``std``,
        shaped (N, C, H, W) (C = 1 for grey images) or (N, C*H*W) when ``flatten``; y int64 (N,).
        Both are new host NumPy arrays. ``normalize=False`` stops at [0, 1], for a transform pipeline
        that ends in :class:`~xpnn.data.transforms.Normalize` (see ``transforms.default_transforms``)."""
        x = self.images.astype(np.float32).reshape(len(self.images), *self.image_shape)
        x /= self.pixel_max
        if normalize:
            x -= _per_channel(self.mean)
            x /= _per_channel(self.std)
        shape = (len(x), -1) if flatten else x.shape
        return x.reshape(shape), self.labels.astype(np.int64)


def _per_channel(value):
    """A float, or a per-channel sequence as a float32 (C, 1, 1) array that broadcasts over (N, C, H, W)."""
    if isinstance(value, numbers.Real):
        return value
    return np.asarray(value, dtype=np.float32).reshape(-1, 1, 1)


def _size_text(size):
    return "x".join(str(d) for d in size)


def _spellings(stem):
    """The accepted names of an IDX file: canonical first, then with '.' before idx, each with and without .gz."""
    dotted = stem.replace("-idx", ".idx")
    return [f"{stem}.gz", stem, f"{dotted}.gz", dotted]


def _find(directory, stem):
    """The first existing spelling of ``stem`` in ``directory``; a FIFO or a folder counts, so that the
    IDX reader reports what it is rather than the file being called missing."""
    return next((directory / n for n in _spellings(stem) if (directory / n).exists()), None)


def _find_split(directory, stems):
    paths = [_find(directory, stem) for stem in stems]
    return paths if all(paths) else None


def _home(dirs, stems):
    """Where a split's files belong: the first directory that holds any of them, else the first searched."""
    return next((d for d in dirs if any(_find(d, stem) for stem in stems)), dirs[0])


def _locate(info, split, root, download):
    """Paths of the split's (images, labels) files. When some are missing, only those are named and
    downloaded (if allowed), into the directory that holds the others."""
    stems = info.files(split)
    dirs = data_dirs(info.name, root)
    for directory in dirs:
        found = _find_split(directory, stems)
        if found:
            return found
    target = _home(dirs, stems)
    missing = [f"{stem}.gz" for stem in stems if _find(target, stem) is None]
    if not download:
        raise MissingDataError(missing_message(info, missing, target, dirs, " (download=False)"))
    download_files(info, missing, target, dirs)
    return _find_split(target, stems)


def load_dataset(name, train=True, root=None, download=True):
    """Load the training (``train=True``) or test split of dataset ``name`` (see ``DATASETS``).

    Files are looked up under ``root``, else ``$XPNN_DATA_DIR``, else the user cache (see
    :func:`data_dirs`); missing ones are downloaded and checksummed when ``download`` is true.
    Files found on disk are trusted as found, after the IDX reader's checks (which include the
    registry's bound on each split's image count and image shape). CIFAR-10 and CIFAR-100 are read
    from their binary archive or its extracted folder (``xpnn.data.cifar``), never the pickle version.
    """
    info = dataset_info(name)
    split = "train" if train else "test"
    if info.bundled:
        images, labels = load_digits(split)
    elif info.records is not None:
        images, labels = load_records(info, split, root, download)
    else:
        images_path, labels_path = _locate(info, split, root, download)
        max_images, max_labels = info.max_dims(split)
        images = read_idx(images_path, ndim=3, dtype=np.uint8, max_dims=max_images)
        labels = read_idx(labels_path, ndim=1, dtype=np.uint8, max_dims=max_labels)
        if len(images) != len(labels):
            raise DataError(
                f"{info.name} ({split}): {images_path.name} has {len(images)} images but {labels_path.name} has {len(labels)} labels"
            )
    return Dataset(info.name, split, images, labels.astype(np.int64), info.classes, info.pixel_max, info.mean, info.std)


def download(name, root=None, train=None):
    """Download the files of dataset ``name`` that are not on disk yet (both splits unless ``train``
    picks one) and return the directory that holds them."""
    info = dataset_info(name)
    if info.bundled:
        return DIGITS_PATH.parent
    splits = ["train", "test"] if train is None else ["train" if train else "test"]
    if info.records is not None:
        kind, path = locate(info, splits[0], root, download=True)
        return path.parent
    paths = [path for split in splits for path in _locate(info, split, root, download=True)]
    return paths[0].parent

"""Batch transforms that run on the device: random crop with zero padding, random horizontal flip,
per-channel normalisation, and :class:`Compose` to chain them, as in torchvision's CIFAR recipe.

A transform is a callable ``transform(x, generator=None)`` taking a batch ``x`` of images shaped
(N, C, H, W), on any backend, and returning the transformed batch on the same device. The pixels
never leave the device: crops are one gather (``take``) with an index array computed on the device,
flips one ``where`` over ``flip(x)``. The random draws (a crop offset and a coin per image) come from
a host NumPy ``generator`` (None: :func:`xpnn.random.default_generator`) and move to the device as one
small array per transform and batch: that is how xpnn keeps CPU and GPU runs with one seed
identical, as it does for shuffles and dropout. :class:`~xpnn.data.DataLoader` (``transform=``)
passes a generator of its own, derived from its shuffle generator at each epoch's start, so a run
resumed from a checkpoint draws the same crops and flips as an uninterrupted one.
"""

import inspect
import math
import numbers

import numpy as np

from .. import backend
from .. import random as xpnn_random
from ..errors import ArgumentTypeError, ConfigError, DTypeError, ShapeError
from .registry import dataset_info


def _generator(generator, where):
    if generator is None:
        return xpnn_random.default_generator()
    if not isinstance(generator, np.random.Generator):
        raise ArgumentTypeError(f"{where}: expected generator to be a numpy.random.Generator or None, found {type(generator).__name__}")
    return generator


def _batch(x, where):
    """``x``'s namespace after checking that it is an (N, C, H, W) array."""
    shape = getattr(x, "shape", None)
    if shape is None or not hasattr(x, "dtype") or isinstance(x, (str, bytes)):
        raise ArgumentTypeError(f"{where}: expected an array of images (N, C, H, W), found {type(x).__name__}")
    if len(shape) != 4:
        raise ShapeError(f"{where}: expected a batch of images shaped (N, C, H, W), found shape {tuple(shape)}")
    return backend.namespace_of(x)


def _pair(value, name, where, minimum):
    """(h, w) from an int or a pair of ints, each at least ``minimum``."""
    items = (value, value) if isinstance(value, numbers.Integral) and not isinstance(value, bool) else value
    ok = isinstance(items, (tuple, list)) and len(items) == 2
    ok = ok and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= minimum for v in items)
    if not ok:
        raise ConfigError(f"{where}: expected {name} to be an int or an (h, w) pair of ints >= {minimum}, found {value!r}")
    return int(items[0]), int(items[1])


class Transform:
    """Base class of xpnn's batch transforms: ``transform(x, generator=None)``."""

    def __call__(self, x, generator=None):
        raise NotImplementedError


class RandomCrop(Transform):
    """Pad each image with ``padding`` zeros on every side, then cut a ``size`` window ((h, w) or one
    int for a square) at a random place, drawn per image. With the default ``padding=4`` and ``size``
    the image size, each image moves by up to 4 pixels in each direction, zeros filling in."""

    def __init__(self, size, padding=4):
        self.size = _pair(size, "size", "RandomCrop", 1)
        self.padding = _pair(padding, "padding", "RandomCrop", 0)

    def __repr__(self):
        size = self.size[0] if self.size[0] == self.size[1] else self.size
        padding = self.padding[0] if self.padding[0] == self.padding[1] else self.padding
        return f"RandomCrop({size}, padding={padding})"

    def __call__(self, x, generator=None):
        xp = _batch(x, "RandomCrop")
        generator = _generator(generator, "RandomCrop")
        n, c, h, w = x.shape
        (oh, ow), (ph, pw) = self.size, self.padding
        if oh > h + 2 * ph or ow > w + 2 * pw:
            raise ShapeError(f"RandomCrop: expected images of at least {oh - 2 * ph}x{ow - 2 * pw} to cut {oh}x{ow} with padding {self.padding}, found {h}x{w}")
        # the window's top-left corner in the unpadded image, per image: one small host draw, one transfer
        corners = generator.integers(0, (h + 2 * ph - oh + 1, w + 2 * pw - ow + 1), size=(n, 2)) - np.array([ph, pw])
        device = backend.device_of(x)
        corners = backend.asarray(corners.astype(np.int64), xp, device=device)
        rows = xp.arange(oh, dtype=xp.int64, device=device)[None, :] + corners[:, 0:1]  # (N, oh)
        cols = xp.arange(ow, dtype=xp.int64, device=device)[None, :] + corners[:, 1:2]  # (N, ow)
        inside = ((rows >= 0) & (rows < h))[:, None, :, None] & ((cols >= 0) & (cols < w))[:, None, None, :]
        rows = xp.clip(rows, 0, h - 1)[:, None, :, None]
        cols = xp.clip(cols, 0, w - 1)[:, None, None, :]
        images = xp.arange(n * c, dtype=xp.int64, device=device)
        planes = xp.reshape(images, (n, c, 1, 1)) * (h * w)
        index = xp.reshape(planes + rows * w + cols, (-1,))
        out = xp.reshape(xp.take(xp.reshape(x, (-1,)), index), (n, c, oh, ow))
        return xp.where(inside, out, xp.zeros((), dtype=x.dtype, device=device))


class RandomHorizontalFlip(Transform):
    """Mirror each image left to right with probability ``p``, drawn per image."""

    def __init__(self, p=0.5):
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0 <= p <= 1:
            raise ConfigError(f"RandomHorizontalFlip: expected p to be a probability in [0, 1], found {p!r}")
        self.p = float(p)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p:g})"

    def __call__(self, x, generator=None):
        xp = _batch(x, "RandomHorizontalFlip")
        generator = _generator(generator, "RandomHorizontalFlip")
        flips = generator.random(x.shape[0]) < self.p
        flips = backend.asarray(flips.reshape(-1, 1, 1, 1), xp, device=backend.device_of(x))
        return xp.where(flips, xp.flip(x, axis=3), x)


class Normalize(Transform):
    """``(x - mean) / std`` channel by channel; ``mean`` and ``std`` are one number, or one per
    channel (a dataset's are ``xpnn.data.DATASETS[name].mean`` / ``.std``, for pixels in [0, 1]).
    The result keeps ``x``'s floating dtype."""

    def __init__(self, mean, std):
        self.mean = self._values(mean, "mean")
        self.std = self._values(std, "std")
        if len(self.mean) != len(self.std) and 1 not in (len(self.mean), len(self.std)):
            raise ConfigError(f"Normalize: expected mean and std of the same length (one per channel), found {len(self.mean)} and {len(self.std)}")
        if not all(s > 0 for s in self.std):
            raise ConfigError(f"Normalize: expected every std to be positive, found {self.std}")
        self._constants = {}

    @staticmethod
    def _values(value, name):
        values = (value,) if isinstance(value, numbers.Real) else value
        ok = isinstance(values, (tuple, list)) and len(values) > 0
        ok = ok and all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v) for v in values)
        if not ok:
            raise ConfigError(f"Normalize: expected {name} to be a finite number or a sequence of them (one per channel), found {value!r}")
        return tuple(float(v) for v in values)

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std})"

    def __call__(self, x, generator=None):
        xp = _batch(x, "Normalize")
        channels = x.shape[1]
        if max(len(self.mean), len(self.std)) not in (1, channels):
            raise ShapeError(f"Normalize: expected images of {max(len(self.mean), len(self.std))} channels, found {channels} (shape {tuple(x.shape)})")
        if not xp.isdtype(x.dtype, "real floating"):
            raise DTypeError(f"Normalize: expected floating images (pixels scaled to [0, 1]: Dataset.arrays(normalize=False)), found dtype {x.dtype}")
        mean, std = self._constant(xp, x)
        return (x - mean) / std

    def _constant(self, xp, x):
        """mean and std as (1, C, 1, 1) arrays of ``x``'s dtype on its device, made once per place."""
        device = backend.device_of(x)
        key = (xp.__name__, repr(device), str(x.dtype))
        if key not in self._constants:
            made = []
            for values in (self.mean, self.std):
                host = np.asarray(values, dtype=np.float64).reshape(1, -1, 1, 1)
                made.append(backend.asarray(host, xp, dtype=x.dtype, device=device))
            self._constants[key] = tuple(made)
        return self._constants[key]


class Compose(Transform):
    """Apply ``transforms`` in order, with one generator for all."""

    def __init__(self, transforms):
        if isinstance(transforms, (str, bytes)) or not isinstance(transforms, (list, tuple)):
            raise ArgumentTypeError(f"Compose: expected a list of transforms, found {type(transforms).__name__}")
        for position, transform in enumerate(transforms):
            check_transform(transform, f"Compose: transform {position}")
        self.transforms = list(transforms)

    def __repr__(self):
        return f"Compose([{', '.join(map(repr, self.transforms))}])"

    def __call__(self, x, generator=None):
        generator = _generator(generator, "Compose")
        for transform in self.transforms:
            x = transform(x, generator)
        return x


def check_transform(transform, where):
    """``transform`` if it can be called as ``transform(x, generator)``, else an ArgumentTypeError."""
    if not callable(transform):
        raise ArgumentTypeError(f"{where}: expected a transform, a callable taking (x, generator), found {type(transform).__name__}")
    try:
        inspect.signature(transform).bind(None, None)
    except TypeError:
        raise ArgumentTypeError(
            f"{where}: expected a transform, a callable taking (x, generator), found {transform!r}, which cannot take two arguments"
        ) from None
    except ValueError:  # no signature to inspect (a builtin): trust it
        pass
    return transform


def default_transforms(name):
    """The training augmentation xpnn uses for dataset ``name``, or None for a dataset without one
    (``DatasetInfo.augment`` false): for CIFAR-10 and CIFAR-100, ``RandomCrop(32, padding=4)``,
    ``RandomHorizontalFlip()`` and ``Normalize`` with the registry's mean and std. It ends in the
    normalisation, so it takes pixels scaled to [0, 1]: ``dataset.arrays(normalize=False)``."""
    info = dataset_info(name)
    if not info.augment:
        return None
    return Compose([RandomCrop(tuple(info.image_shape[-2:]), padding=4), RandomHorizontalFlip(0.5), Normalize(info.mean, info.std)])

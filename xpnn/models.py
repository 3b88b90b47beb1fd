"""Ready models: MLP, SimpleCNN (the seed CNN) and LeNet, sized from an image shape and a class
count, plus :func:`build_model`, the factory the CLI and checkpoints use to rebuild a model by name.

Every model is a :class:`~xpnn.nn.Sequential` taking ``xp=`` (a device string or namespace) and
``dtype=``; images are NCHW, and the MLP also takes already-flat (N, D) input.
"""

import numbers

from . import nn
from .errors import ConfigError

ACTIVATIONS = {
    "relu": nn.ReLU,
    "leaky_relu": nn.LeakyReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "gelu": nn.GELU,
}


def _activation(activation):
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ConfigError(f"unknown activation {activation!r}; expected one of: {', '.join(ACTIVATIONS)}")
        return ACTIVATIONS[activation]()
    if isinstance(activation, type) and issubclass(activation, nn.Module):
        return activation()
    raise ConfigError(f"expected an activation name ({', '.join(ACTIVATIONS)}) or a Module class, got {activation!r}")


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _checked_input(model, image_shape, num_classes, minimum=1):
    """(C, H, W) from ``image_shape`` (H, W) (one channel) or (C, H, W), after checking that
    ``model`` (its name, for the message) can take such images, at least ``minimum`` pixels on
    each side, and ``num_classes``."""
    try:
        dims = tuple(image_shape)
    except TypeError:
        dims = ()
    if len(dims) not in (2, 3) or not all(_is_int(d) for d in dims):
        raise ConfigError(f"{model} needs an image shape (H, W) or (C, H, W) of ints, got {image_shape!r}")
    c, h, w = (1, *dims) if len(dims) == 2 else dims
    if c < 1 or h < minimum or w < minimum:
        raise ConfigError(f"{model} needs images of at least {minimum}x{minimum} pixels and 1 channel, got {h}x{w} with {c} channel(s)")
    if not _is_int(num_classes) or num_classes < 1:
        raise ConfigError(f"{model} needs num_classes >= 1, got {num_classes!r}")
    return int(c), int(h), int(w)


def _conv_out(size, kernel, padding=0, stride=1):
    return (size + 2 * padding - kernel) // stride + 1


class _Model(nn.Sequential):
    """A Sequential whose parameter-free layers share the parameters' namespace."""

    def __init__(self, layers, xp):
        super().__init__(*layers)
        self.to(xp)


@nn.register
class MLP(_Model):
    """Fully connected network: ``sizes`` = [in_features, hidden..., out_features], e.g.
    ``MLP([784, 256, 10])``. The input is flattened first, so (N, C, H, W) images and (N, D)
    vectors both work. ``activation`` (a name in ``ACTIVATIONS`` or a Module class) follows every
    hidden layer, then Dropout(``dropout``) when ``dropout`` > 0."""

    def __init__(self, sizes, activation="relu", dropout=0.0, init="he", dtype=None, xp=None):
        sizes = [int(s) for s in sizes]
        if len(sizes) < 2 or min(sizes) < 1:
            raise ConfigError(f"MLP: expected sizes [in_features, ..., out_features] of at least two positive ints, got {sizes}")
        _activation(activation)  # validate the name even when there is no hidden layer
        layers = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            last = i == len(sizes) - 2
            layers.append(nn.Linear(fan_in, fan_out, init=init, dtype=dtype, xp=xp))
            if not last:
                layers.append(_activation(activation))
                if dropout:
                    layers.append(nn.Dropout(dropout))
        super().__init__(layers, xp)
        self.sizes = sizes


@nn.register
class SimpleCNN(_Model):
    """The seed CNN: Conv2d(C, 8, 3, padding=1), ReLU, Flatten, Linear(8*H*W, 128), ReLU,
    Linear(128, num_classes). The padding keeps the image size, so any image of at least 1x1
    fits."""

    def __init__(self, in_channels=1, image_size=(28, 28), num_classes=10, dtype=None, xp=None):
        c, h, w = _checked_input("SimpleCNN", (in_channels, *_pair(image_size)), num_classes)
        layers = [
            nn.Conv2d(c, 8, 3, padding=1, dtype=dtype, xp=xp),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(8 * h * w, 128, dtype=dtype, xp=xp),
            nn.ReLU(),
            nn.Linear(128, num_classes, dtype=dtype, xp=xp),
        ]
        super().__init__(layers, xp)


@nn.register
class LeNet(_Model):
    """LeNet-5 style: Conv2d(C, 6, 5, padding=2), ReLU, MaxPool2d(2), Conv2d(6, 16, 5), ReLU,
    MaxPool2d(2), Flatten, Linear(16*h*w, 120), ReLU, Linear(120, num_classes).

    The sizes follow the image: 28x28 gives the classic 16x5x5 features; on small images (8x8
    digits) the second convolution is padded just enough that the last pooling still sees a 2x2
    window, so no spatial size drops below 1. Images must be at least 2x2."""

    def __init__(self, in_channels=1, image_size=(28, 28), num_classes=10, dtype=None, xp=None):
        c, h, w = _checked_input("LeNet", (in_channels, *_pair(image_size)), num_classes, minimum=2)
        h, w = h // 2, w // 2  # conv1 keeps the size (padding 2), then the first pool halves it
        pad = tuple(max(0, -(-(6 - s) // 2)) for s in (h, w))  # smallest padding giving conv2 output >= 2
        h, w = (_conv_out(s, 5, p) // 2 for s, p in zip((h, w), pad))
        layers = [
            nn.Conv2d(c, 6, 5, padding=2, dtype=dtype, xp=xp),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5, padding=pad[0] if pad[0] == pad[1] else pad, dtype=dtype, xp=xp),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(16 * h * w, 120, dtype=dtype, xp=xp),
            nn.ReLU(),
            nn.Linear(120, num_classes, dtype=dtype, xp=xp),
        ]
        super().__init__(layers, xp)


def _pair(size):
    if isinstance(size, int):
        return (size, size)
    return tuple(size)


def _build_mlp(image_shape, num_classes, dtype, xp, hidden=(256,), activation="relu", dropout=0.0):
    c, h, w = _checked_input("MLP", image_shape, num_classes)
    return MLP([c * h * w, *hidden, num_classes], activation=activation, dropout=dropout, dtype=dtype, xp=xp)


def _build_cnn(image_shape, num_classes, dtype, xp):
    c, h, w = _checked_input("SimpleCNN", image_shape, num_classes)
    return SimpleCNN(c, (h, w), num_classes, dtype=dtype, xp=xp)


def _build_lenet(image_shape, num_classes, dtype, xp):
    c, h, w = _checked_input("LeNet", image_shape, num_classes, minimum=2)
    return LeNet(c, (h, w), num_classes, dtype=dtype, xp=xp)


MODELS = {"mlp": _build_mlp, "cnn": _build_cnn, "lenet": _build_lenet}


def build_model(name, image_shape, num_classes, device=None, dtype=None, **options):
    """The model called ``name`` ("mlp", "cnn" or "lenet") for images of ``image_shape``
    ((H, W) or (C, H, W)) and ``num_classes`` classes, on ``device``. ``options`` go to the
    model (for "mlp": ``hidden=(256,)``, ``activation``, ``dropout``). Images the model cannot
    take (no pixels, no channel, smaller than LeNet's 2x2) and ``num_classes`` < 1 raise a
    ConfigError naming the model and what it needs."""
    key = str(name).strip().lower()
    if key not in MODELS:
        raise ConfigError(f"unknown model {name!r}; expected one of: {', '.join(MODELS)}")
    try:
        return MODELS[key](image_shape, num_classes, dtype, device, **options)
    except TypeError as exc:
        if "unexpected keyword" in str(exc):
            raise ConfigError(f"model {key!r}: {exc}") from exc
        raise

"""Ready models: MLP, SimpleCNN (the seed CNN), LeNet and the CIFAR ResNets of He et al. (2016)
(ResNet-20/32/56 and the small ResNet-8 for 28x28 digits), sized from an image shape and a class
count, plus :func:`build_model`, the factory the CLI and checkpoints use to rebuild a model by name.

Every model is a :class:`~xpnn.nn.Sequential` taking ``xp=`` (a device string or namespace) and
``dtype=``; images are NCHW, and the MLP also takes already-flat (N, D) input.
"""

import numbers
from collections import OrderedDict

from . import nn, ops
from .errors import ConfigError, ShapeError

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


@nn.register
class ZeroPadShortcut(nn.Module):
    """The parameter-free shortcut of a ResNet block that changes the resolution or the width
    ("option A" of He et al., 2016, used in their CIFAR experiments): the input subsampled by
    ``stride`` (every ``stride``-th row and column, as a 1x1 convolution of that stride would
    read it) and zero-padded from ``in_channels`` to ``out_channels`` channels, the new channels
    after the old ones. Backward scatters the first ``in_channels`` channels of the gradient back
    to the subsampled pixels; the other pixels get zero gradient.

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output, at least ``in_channels``.
        stride: subsampling step in both directions (default 2).

    Shape:
        - Input: ``(N, in_channels, H, W)``.
        - Output: ``(N, out_channels, ceil(H / stride), ceil(W / stride))``.
    """

    _cache = ("_x_shape",)  # what only backward needs: dropped by a forward under nn.no_grad()

    def __init__(self, in_channels, out_channels, stride=2):
        super().__init__()
        if not all(_is_int(v) and v >= 1 for v in (in_channels, out_channels, stride)) or out_channels < in_channels:
            raise ConfigError(f"ZeroPadShortcut: expected positive ints with out_channels >= in_channels, got in_channels={in_channels!r}, "
                              f"out_channels={out_channels!r}, stride={stride!r}")
        self.in_channels, self.out_channels, self.stride = int(in_channels), int(out_channels), int(stride)
        self._x_shape = None

    def forward(self, x):
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ShapeError(f"{self._name()}: expected an (N, {self.in_channels}, H, W) input, got shape {tuple(x.shape)}")
        self._x_shape = tuple(x.shape)
        s = self.stride
        y = x[:, :, ::s, ::s]
        if self.out_channels == self.in_channels:
            return y
        out = ops.layout.empty_ordered(x, (y.shape[0], self.out_channels, *y.shape[2:]))  # in x's memory order (batch-last from Conv2d)
        out[:, :self.in_channels, ...] = y
        out[:, self.in_channels:, ...] = 0
        return out

    def backward(self, grad):
        g = grad[:, :self.in_channels, :, :]
        if self.stride == 1:
            return g
        out = ops.layout.empty_ordered(grad, self._x_shape)  # in the gradient's memory order
        out[...] = 0
        out[:, :, ::self.stride, ::self.stride] = g
        return out

    def extra_repr(self):
        return f"{self.in_channels}, {self.out_channels}, stride={self.stride}"


def _conv3x3(c_in, c_out, stride, dtype, xp):
    return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False, init="he", dtype=dtype, xp=xp)


def _basic_block(c_in, c_out, stride, dtype, xp):
    """ReLU(body(x) + shortcut(x)), body = conv3x3(stride), BN, ReLU, conv3x3, BN."""
    body = nn.Sequential(OrderedDict(
        conv1=_conv3x3(c_in, c_out, stride, dtype, xp),
        bn1=nn.BatchNorm2d(c_out, dtype=dtype, xp=xp),
        relu=nn.ReLU(),
        conv2=_conv3x3(c_out, c_out, 1, dtype, xp),
        bn2=nn.BatchNorm2d(c_out, dtype=dtype, xp=xp),
    ))
    shortcut = None if stride == 1 and c_in == c_out else ZeroPadShortcut(c_in, c_out, stride)
    return nn.Sequential(OrderedDict(residual=nn.Residual(body, shortcut), relu=nn.ReLU()))


@nn.register
class ResNet(_Model):
    """The CIFAR ResNet of He et al., "Deep Residual Learning for Image Recognition" (2016),
    section 4.2: a 3x3 convolution of ``widths[0]`` channels with BatchNorm and ReLU, then one
    stage per entry of ``widths``, each of ``blocks`` basic blocks (two 3x3 convolutions with
    BatchNorm, ReLU after the first and after the addition), the first block of every stage but
    the first with stride 2; then global average pooling and a Linear layer to ``num_classes``.
    The depth is ``len(widths) * 2 * blocks + 2``: ``blocks`` 3, 5, 9 with the default widths
    16, 32, 64 are ResNet-20, -32 and -56 (:func:`resnet20` ...); ``blocks=1`` is ResNet-8.

    Shortcuts are option A of the paper's CIFAR experiments: the identity, and at a block that
    halves the resolution and doubles the width a parameter-free :class:`ZeroPadShortcut`
    (subsample by 2, zero-pad the new channels). ResNet-20 for 10 classes thus has 269,722
    parameters (the paper's "0.27M"), ResNet-32 464,154 and ResNet-56 853,018. The convolutions
    have no bias (BatchNorm follows each) and are initialised "he", N(0, 2 / fan_in) (He et al.,
    2015; fan_in = 9 x input channels, which equals fan_out except at the stem and the first
    convolution of a stage); BatchNorm starts at weight 1, bias 0; the Linear layer "he" too.

    Parameters are named like torchvision's: ``conv1``, ``bn1``, ``layer1.0.residual.body.conv1``,
    ... ``fc``. Any image of at least 1x1 pixels fits (the pooling is global).

    Args:
        blocks: basic blocks per stage, n in the paper's 6n + 2 (default 3: ResNet-20).
        in_channels: image channels (3 for CIFAR, 1 for MNIST).
        num_classes: outputs of the last layer.
        widths: channels of each stage (default (16, 32, 64)).
        dtype, xp: of the parameters.

    Shape:
        - Input: ``(N, in_channels, H, W)``.
        - Output: ``(N, num_classes)`` class scores.
    """

    def __init__(self, blocks=3, in_channels=3, num_classes=10, widths=(16, 32, 64), dtype=None, xp=None):
        widths = list(widths) if isinstance(widths, (list, tuple)) else widths
        if not _is_int(blocks) or blocks < 1:
            raise ConfigError(f"ResNet needs blocks >= 1 per stage, got {blocks!r}")
        if not isinstance(widths, list) or not widths or not all(_is_int(w) and w >= 1 for w in widths):
            raise ConfigError(f"ResNet needs widths, a non-empty list of positive ints (channels per stage), got {widths!r}")
        c, _, _ = _checked_input("ResNet", (in_channels, 1, 1), num_classes)
        layers = OrderedDict(
            conv1=_conv3x3(c, widths[0], 1, dtype, xp),
            bn1=nn.BatchNorm2d(widths[0], dtype=dtype, xp=xp),
            relu=nn.ReLU(),
        )
        c_in = widths[0]
        for i, width in enumerate(widths):
            stage = [_basic_block(c_in if j == 0 else width, width, 2 if i > 0 and j == 0 else 1, dtype, xp) for j in range(blocks)]
            layers[f"layer{i + 1}"] = nn.Sequential(*stage)
            c_in = width
        layers["pool"] = nn.AdaptiveAvgPool2d(1)
        layers["flatten"] = nn.Flatten()
        layers["fc"] = nn.Linear(c_in, num_classes, dtype=dtype, xp=xp)
        super().__init__([layers], xp)
        self.blocks, self.widths = int(blocks), [int(w) for w in widths]


def resnet20(in_channels=3, num_classes=10, dtype=None, xp=None):
    """ResNet-20 (3 blocks per stage, 269,722 parameters for 10 classes): see :class:`ResNet`."""
    return ResNet(3, in_channels, num_classes, dtype=dtype, xp=xp)


def resnet32(in_channels=3, num_classes=10, dtype=None, xp=None):
    """ResNet-32 (5 blocks per stage, 464,154 parameters for 10 classes): see :class:`ResNet`."""
    return ResNet(5, in_channels, num_classes, dtype=dtype, xp=xp)


def resnet56(in_channels=3, num_classes=10, dtype=None, xp=None):
    """ResNet-56 (9 blocks per stage, 853,018 parameters for 10 classes): see :class:`ResNet`."""
    return ResNet(9, in_channels, num_classes, dtype=dtype, xp=xp)


def resnet8(in_channels=1, num_classes=10, dtype=None, xp=None):
    """ResNet-8 (1 block per stage; 75,002 parameters for grey images and 10 classes, 75,290 for colour),
    the small residual network for 28x28 digits: see :class:`ResNet`."""
    return ResNet(1, in_channels, num_classes, dtype=dtype, xp=xp)


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


def _resnet_builder(blocks):
    def build(image_shape, num_classes, dtype, xp):
        c, _, _ = _checked_input(f"ResNet-{6 * blocks + 2}", image_shape, num_classes)
        return ResNet(blocks, c, num_classes, dtype=dtype, xp=xp)

    build.__name__ = f"_build_resnet{6 * blocks + 2}"
    return build


MODELS = {"mlp": _build_mlp, "cnn": _build_cnn, "lenet": _build_lenet}
MODELS |= {f"resnet{6 * n + 2}": _resnet_builder(n) for n in (1, 3, 5, 9)}


def build_model(name, image_shape, num_classes, device=None, dtype=None, **options):
    """The model called ``name`` ("mlp", "cnn", "lenet", "resnet8", "resnet20", "resnet32" or
    "resnet56") for images of ``image_shape``
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

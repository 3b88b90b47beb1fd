"""Device-side batch transforms (xpnn.data.transforms) on every backend: crops and flips against a
plain NumPy reference with the same draws, normalisation against Dataset.arrays, reproducibility from
a seed, DataLoader(transform=) resuming bit for bit, no host conversion on array_api_strict, and bad
arguments named."""

import json

import numpy as np
import pytest
from test_host_syncs import counting_host_conversions

import xpnn
from xpnn import backend as xb
from xpnn.data import DataLoader, Dataset
from xpnn.data.transforms import Compose, Normalize, RandomCrop, RandomHorizontalFlip, default_transforms
from xpnn.errors import ArgumentTypeError, ConfigError, DTypeError, ShapeError


def _images(n=6, c=3, h=7, w=6, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, size=(n, c, h, w)).astype(np.float32)


def _crop_reference(x, size, padding, generator):
    """Pad with zeros, then cut each image's window at the corner drawn as RandomCrop draws it."""
    (oh, ow), (ph, pw) = size, padding
    n, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    corners = generator.integers(0, (h + 2 * ph - oh + 1, w + 2 * pw - ow + 1), size=(n, 2))
    return np.stack([padded[i, :, cy : cy + oh, cx : cx + ow] for i, (cy, cx) in enumerate(corners)])


def _on(backend, x):
    return backend.asarray(x)


@pytest.mark.parametrize("size, padding", [((7, 6), (4, 4)), ((5, 4), (0, 0)), ((9, 3), (2, 1)), ((15, 14), (4, 4)), ((1, 1), (0, 0))])
def test_random_crop_matches_a_numpy_reference(backend, size, padding):
    x = _images()
    out = RandomCrop(size, padding=padding)(_on(backend, x), np.random.default_rng(5))
    assert type(out) is xb.array_type(backend.xp) and xb.device_of(out) == xb.device_of(_on(backend, x))
    expected = _crop_reference(x, size, padding, np.random.default_rng(5))
    np.testing.assert_array_equal(xb.to_numpy(out), expected)


def test_random_crop_keeps_integer_images_and_pads_with_zeros(backend):
    x = np.random.default_rng(1).integers(1, 256, size=(20, 3, 4, 4), dtype=np.uint8)
    out = xb.to_numpy(RandomCrop(4, padding=2)(_on(backend, x), np.random.default_rng(0)))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, _crop_reference(x, (4, 4), (2, 2), np.random.default_rng(0)))
    assert (out == 0).any(), "some windows reach into the padding"


def test_random_crop_of_the_whole_image_without_padding_is_the_identity(backend):
    x = _images()
    np.testing.assert_array_equal(xb.to_numpy(RandomCrop((7, 6), padding=0)(_on(backend, x), np.random.default_rng(0))), x)


@pytest.mark.parametrize("p", [0.0, 0.5, 1.0])
def test_horizontal_flip_matches_a_numpy_reference(backend, p):
    x = _images(n=16)
    out = xb.to_numpy(RandomHorizontalFlip(p)(_on(backend, x), np.random.default_rng(3)))
    flips = np.random.default_rng(3).random(16) < p
    np.testing.assert_array_equal(out, np.where(flips[:, None, None, None], x[..., ::-1], x))
    if p == 0.5:
        assert 0 < flips.sum() < 16


def test_normalize_is_the_datasets_normalisation_bit_for_bit(backend):
    images = np.random.default_rng(2).integers(0, 256, size=(5, 3, 8, 8), dtype=np.uint8)
    mean, std = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
    ds = Dataset("toy", "train", images, np.zeros(5, np.int64), ("a",), mean=mean, std=std)
    raw, _ = ds.arrays(normalize=False)
    out = xb.to_numpy(Normalize(mean, std)(_on(backend, raw)))
    np.testing.assert_array_equal(out, ds.arrays()[0])
    np.testing.assert_allclose(out, (images / 255 - np.reshape(mean, (3, 1, 1))) / np.reshape(std, (3, 1, 1)), rtol=1e-5, atol=1e-5)


def test_compose_is_reproducible_from_a_seed(backend):
    x = _on(backend, _images(n=32))
    pipeline = Compose([RandomCrop((7, 6), padding=2), RandomHorizontalFlip(), Normalize(0.5, 2.0)])
    a = xb.to_numpy(pipeline(x, np.random.default_rng(11)))
    b = xb.to_numpy(pipeline(x, np.random.default_rng(11)))
    c = xb.to_numpy(pipeline(x, np.random.default_rng(12)))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    generator = np.random.default_rng(11)
    step = RandomHorizontalFlip()(RandomCrop((7, 6), padding=2)(x, generator), generator)
    np.testing.assert_array_equal(a, (xb.to_numpy(step) - 0.5) / 2.0)


def test_without_a_generator_the_default_one_is_used():
    saved = xpnn.random.get_rng_state()
    try:
        x = _images(n=32)
        xpnn.manual_seed(4)
        a = RandomCrop(7 - 1, padding=1)(x)
        xpnn.manual_seed(4)
        np.testing.assert_array_equal(RandomCrop(7 - 1, padding=1)(x), a)
    finally:
        xpnn.random.set_rng_state(saved)


def test_default_transforms():
    assert repr(default_transforms("cifar10")) == (
        "Compose([RandomCrop(32, padding=4), RandomHorizontalFlip(p=0.5), Normalize(mean=(0.4914, 0.4822, 0.4465), std=(0.247, 0.2435, 0.2616))])"
    )
    assert "Normalize(mean=(0.5071, 0.4865, 0.4409)" in repr(default_transforms("CIFAR100"))
    assert default_transforms("mnist") is None and default_transforms("digits") is None


# ---- through the DataLoader ------------------------------------------------------------------------


def _cifar_like(n=40):
    x = np.random.default_rng(0).uniform(0, 1, size=(n, 3, 8, 8)).astype(np.float32)
    return x, np.arange(n, dtype=np.int64)


def _augmented(loader):
    return [(xb.to_numpy(xbatch), xb.to_numpy(ybatch)) for xbatch, ybatch in loader]


def _equal(a, b):
    return len(a) == len(b) and all(np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


PIPELINE = lambda: Compose([RandomCrop(8, padding=4), RandomHorizontalFlip(), Normalize((0.5, 0.4, 0.3), (0.2, 0.25, 0.3))])  # noqa: E731


@pytest.mark.parametrize("shuffle", [True, False])
def test_the_loader_applies_the_transform_to_each_batch(backend, shuffle):
    x, y = _cifar_like()
    loader = DataLoader(x, y, batch_size=16, shuffle=shuffle, seed=3, device=backend.device, transform=PIPELINE())
    state = loader.generator.bit_generator.state
    epoch = _augmented(loader)
    # the same draws by hand: the epoch's order, then the transform's generator seeded from the shuffle generator
    generator = np.random.default_rng(3)
    generator.bit_generator.state = state
    order = generator.permutation(40) if shuffle else np.arange(40)
    augment = np.random.default_rng(int(generator.integers(2**63)))
    for (xbatch, ybatch), start in zip(epoch, range(0, 40, 16)):
        idx = order[start : start + 16]
        np.testing.assert_array_equal(ybatch, y[idx])
        np.testing.assert_array_equal(xbatch, PIPELINE()(x[idx], augment))
    assert not _equal(epoch, _augmented(loader)), "each epoch draws anew"


def test_the_same_seed_gives_the_same_epochs_on_every_backend(backend):
    x, y = _cifar_like()
    on_numpy = DataLoader(x, y, batch_size=16, shuffle=True, seed=9, transform=PIPELINE())
    here = DataLoader(x, y, batch_size=16, shuffle=True, seed=9, device=backend.device, transform=PIPELINE())
    for _ in range(2):
        expected, found = _augmented(on_numpy), _augmented(here)
        for (x1, y1), (x2, y2) in zip(expected, found):
            np.testing.assert_array_equal(y1, y2)
            np.testing.assert_allclose(x1, x2, rtol=1e-6, atol=1e-6)


def test_a_resumed_loader_draws_the_same_augmented_batches():
    x, y = _cifar_like()
    uninterrupted = DataLoader(x, y, batch_size=16, shuffle=True, seed=3, transform=PIPELINE())
    expected = [_augmented(uninterrupted) for _ in range(4)]
    first = DataLoader(x, y, batch_size=16, shuffle=True, seed=3, transform=PIPELINE())
    done = [_augmented(first), _augmented(first)]
    state = json.loads(json.dumps(first.state_dict()))
    resumed = DataLoader(x, y, batch_size=16, shuffle=True, seed=999, transform=PIPELINE())
    resumed.load_state_dict(state)
    found = done + [_augmented(resumed), _augmented(resumed)]
    assert all(_equal(a, b) for a, b in zip(found, expected))


def test_a_loader_without_a_transform_draws_as_before():
    x, y = _cifar_like()
    plain = DataLoader(x, y, batch_size=16, shuffle=True, seed=3)
    orders = [[b.tolist() for _, b in plain] for _ in range(2)]
    again = np.random.default_rng(3)
    first, second = again.permutation(40), again.permutation(40)
    assert orders == [[first[i : i + 16].tolist() for i in (0, 16, 32)], [second[i : i + 16].tolist() for i in (0, 16, 32)]]


@pytest.mark.parametrize("device", ["array_api_strict", "array_api_strict:device1"])
def test_augmented_epochs_convert_nothing_to_host_on_array_api_strict(monkeypatch, device):
    strict = pytest.importorskip("array_api_strict")
    x, y = _cifar_like()
    loader = DataLoader(x, y, batch_size=16, shuffle=True, seed=0, device=device, transform=PIPELINE())
    with counting_host_conversions(monkeypatch, type(strict.zeros(1))) as seen:
        batches = [xbatch for xbatch, _ in loader]
    assert seen == [], f"host conversions in an augmented epoch: {seen}"
    assert all(b.device == loader.x.device for b in batches)


def test_augmented_batches_do_not_synchronize_on_cupy():
    cupyx = pytest.importorskip("cupyx")
    try:
        xb.resolve("cuda")
    except xpnn.XpnnError as exc:
        pytest.skip(f"no GPU: {exc}")
    x, y = _cifar_like()
    loader = DataLoader(x, y, batch_size=16, shuffle=True, seed=0, device="cuda", transform=PIPELINE())
    list(loader)  # compile the kernels first
    with cupyx.allow_synchronize(False):
        batches = [xbatch for xbatch, _ in loader]
    assert len(batches) == 3


def test_loader_repr_names_the_transform():
    x, y = _cifar_like()
    assert repr(DataLoader(x, y, batch_size=16, transform=RandomHorizontalFlip(0.25))).endswith(", device=cpu, transform=RandomHorizontalFlip(p=0.25))")


# ---- bad arguments ---------------------------------------------------------------------------------


BAD = [
    (lambda: RandomCrop(0), ConfigError, r"^RandomCrop: expected size to be an int or an \(h, w\) pair of ints >= 1, found 0$"),
    (lambda: RandomCrop((32, 32, 3)), ConfigError, r"expected size to be an int or an \(h, w\) pair of ints >= 1, found \(32, 32, 3\)"),
    (lambda: RandomCrop(32.0), ConfigError, r"found 32.0$"),
    (lambda: RandomCrop(32, padding=-1), ConfigError, r"^RandomCrop: expected padding to be an int or an \(h, w\) pair of ints >= 0, found -1$"),
    (lambda: RandomCrop(True), ConfigError, r"found True$"),
    (lambda: RandomHorizontalFlip(1.5), ConfigError, r"^RandomHorizontalFlip: expected p to be a probability in \[0, 1\], found 1.5$"),
    (lambda: RandomHorizontalFlip("half"), ConfigError, r"found 'half'$"),
    (lambda: Normalize((0.5, 0.5), (0.2, 0.2, 0.2)), ConfigError, r"^Normalize: expected mean and std of the same length \(one per channel\), found 2 and 3$"),
    (lambda: Normalize(0.5, 0.0), ConfigError, r"^Normalize: expected every std to be positive, found \(0.0,\)$"),
    (lambda: Normalize(float("nan"), 1), ConfigError, r"^Normalize: expected mean to be a finite number or a sequence of them \(one per channel\), found nan$"),
    (lambda: Normalize("mean", 1), ConfigError, r"found 'mean'$"),
    (lambda: Compose(RandomHorizontalFlip()), ArgumentTypeError, r"^Compose: expected a list of transforms, found RandomHorizontalFlip$"),
    (lambda: Compose([RandomHorizontalFlip(), "crop"]), ArgumentTypeError, r"^Compose: transform 1: expected a transform, a callable taking \(x, generator\), found str$"),
    (lambda: Compose([lambda x: x]), ArgumentTypeError, r"^Compose: transform 0: expected a transform, a callable taking \(x, generator\), found <function .*, which cannot take two arguments$"),
    (lambda: DataLoader(*_cifar_like(), transform=lambda x: -x), ArgumentTypeError,
     r"^DataLoader transform: expected a transform, a callable taking \(x, generator\), found <function .*, which cannot take two arguments$"),
    (lambda: DataLoader(*_cifar_like(), transform=3), ArgumentTypeError, r"^DataLoader transform: expected a transform, a callable taking \(x, generator\), found int$"),
]


@pytest.mark.parametrize("make, kind, message", BAD)
def test_bad_arguments_are_named(make, kind, message):
    with pytest.raises(kind, match=message):
        make()


BAD_CALLS = [
    (RandomCrop(8), np.zeros((3, 8, 8), np.float32), ShapeError, r"^RandomCrop: expected a batch of images shaped \(N, C, H, W\), found shape \(3, 8, 8\)$"),
    (RandomCrop(20, padding=4), np.zeros((2, 3, 8, 8), np.float32), ShapeError,
     r"^RandomCrop: expected images of at least 12x12 to cut 20x20 with padding \(4, 4\), found 8x8$"),
    (RandomHorizontalFlip(), [[1.0]], ArgumentTypeError, r"^RandomHorizontalFlip: expected an array of images \(N, C, H, W\), found list$"),
    (Normalize((0.5, 0.5, 0.5), (1, 1, 1)), np.zeros((2, 1, 4, 4), np.float32), ShapeError, r"^Normalize: expected images of 3 channels, found 1 \(shape \(2, 1, 4, 4\)\)$"),
    (Normalize(0.5, 1), np.zeros((2, 1, 4, 4), np.uint8), DTypeError, r"^Normalize: expected floating images \(pixels scaled to \[0, 1\]: Dataset.arrays\(normalize=False\)\), found dtype uint8$"),
]


@pytest.mark.parametrize("transform, x, kind, message", BAD_CALLS)
def test_bad_inputs_are_named(transform, x, kind, message):
    with pytest.raises(kind, match=message):
        transform(x, np.random.default_rng(0))


def test_a_generator_that_is_not_one_is_named():
    with pytest.raises(ArgumentTypeError, match=r"^RandomCrop: expected generator to be a numpy.random.Generator or None, found int$"):
        RandomCrop(4)(np.zeros((1, 1, 4, 4), np.float32), 3)

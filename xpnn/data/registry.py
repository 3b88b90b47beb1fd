"""The datasets xpnn knows: file names, download mirrors, published checksums, classes and the
normalisation constants, in one table (``DATASETS``) that users and tests can extend or patch."""

import math
from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True)
class RecordArchive:
    """The layout of a dataset shipped as one ``.tar.gz`` of fixed-size binary records (the CIFAR
    binary versions): each record is one byte per label, then the pixels (channel by channel, rows
    in order). ``labels`` gives the number of values of each label byte, in record order; the last
    one is the label used. ``files`` maps each split to its members (in ``folder``) and ``extras``
    names the other members the archive may hold, which are allowed (up to ``EXTRA_MAX`` bytes each)
    and never read. ``pickle_version`` names the archive and folder of the dataset's Python-pickle
    version, which xpnn refuses to read."""

    archive: str
    folder: str
    files: dict
    labels: tuple
    extras: tuple = ()
    pickle_version: tuple = ()

    def record_size(self, image_shape):
        return len(self.labels) + math.prod(image_shape)


EXTRA_MAX = 1 << 20  # the largest text member (class names, readme) a record archive may hold


@dataclass(frozen=True)
class DatasetInfo:
    """What xpnn knows about one dataset.

    ``mean`` and ``std`` are those of the training images scaled to [0, 1] (pixel / ``pixel_max``):
    one float for grey images, one per channel (a tuple) for colour ones; ``md5`` and ``sizes`` map
    each canonical ``.gz`` file name to its published digest and size in bytes (a download may not
    exceed the size; files found on disk may be smaller, as test files are); ``split_sizes`` and
    ``image_shape`` ((H, W) grey, (C, H, W) colour) bound what an IDX header of the dataset may
    declare; a dataset without ``mirrors`` is bundled with xpnn and never downloaded.

    ``records`` is set for datasets read from an archive of binary records (CIFAR): then each file of
    a split holds exactly ``split_sizes[split] / len(files)`` records, checked before reading (tests
    patch ``split_sizes`` for small archives). ``augment`` marks datasets whose training runs use
    :func:`xpnn.data.transforms.default_transforms` (random crop and flip) by default.
    """

    name: str
    title: str
    homepage: str
    license: str
    classes: tuple
    mean: float
    std: float
    pixel_max: float = 255.0
    mirrors: tuple = ()
    md5: dict = field(default_factory=dict)
    sizes: dict = field(default_factory=dict)
    split_sizes: dict = field(default_factory=lambda: {"train": 60000, "test": 10000})
    image_shape: tuple = (28, 28)
    records: RecordArchive = None
    augment: bool = False

    @property
    def bundled(self):
        return not self.mirrors

    @property
    def channels(self):
        """1 for grey images ((H, W) ``image_shape``), else C of (C, H, W)."""
        return 1 if len(self.image_shape) == 2 else self.image_shape[0]

    def records_per_file(self, split):
        """The exact number of records each file of ``split`` holds (record archives only)."""
        count, files = self.split_sizes[split], self.records.files[split]
        if count % len(files):
            raise ConfigError(f"{self.name}: split_sizes[{split!r}] = {count} is not a whole number of records for each of its {len(files)} files")
        return count // len(files)

    def files(self, split):
        """The (images, labels) IDX file names of ``split`` ("train" or "test"), without ``.gz``."""
        prefix = {"train": "train", "test": "t10k"}[split]
        return f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte"

    def max_dims(self, split):
        """The largest (images, labels) shapes the IDX headers of ``split`` may declare: a header beyond
        them is damage, refused before its data is read."""
        count = self.split_sizes[split]
        return (count, *self.image_shape), (count,)


def _per_file(train_images, train_labels, test_images, test_labels):
    """A value for each of the four canonical ``.gz`` files."""
    return {
        "train-images-idx3-ubyte.gz": train_images,
        "train-labels-idx1-ubyte.gz": train_labels,
        "t10k-images-idx3-ubyte.gz": test_images,
        "t10k-labels-idx1-ubyte.gz": test_labels,
    }


DIGITS = tuple(str(i) for i in range(10))

# CIFAR-100's fine labels in label order (fine_label_names.txt of the archive)
CIFAR100_CLASSES = tuple("""
apple aquarium_fish baby bear beaver bed bee beetle bicycle bottle bowl boy bridge bus butterfly camel can castle
caterpillar cattle chair chimpanzee clock cloud cockroach couch crab crocodile cup dinosaur dolphin elephant flatfish
forest fox girl hamster house kangaroo keyboard lamp lawn_mower leopard lion lizard lobster man maple_tree motorcycle
mountain mouse mushroom oak_tree orange orchid otter palm_tree pear pickup_truck pine_tree plain plate poppy porcupine
possum rabbit raccoon ray road rocket rose sea seal shark shrew skunk skyscraper snail snake spider squirrel streetcar
sunflower sweet_pepper table tank telephone television tiger tractor train trout tulip turtle wardrobe whale
willow_tree wolf woman worm
""".split())
assert len(CIFAR100_CLASSES) == 100

DATASETS = {
    "mnist": DatasetInfo(
        name="mnist",
        title="MNIST",
        homepage="https://yann.lecun.com/exdb/mnist/",
        license="CC BY-SA 3.0 (Y. LeCun, C. Cortes, C. J. C. Burges)",
        classes=DIGITS,
        mean=0.1307,
        std=0.3081,
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
        md5=_per_file(
            "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "d53e105ee54ea40749a09fcbcd1e9432",
            "9fb629c4189551a2d022fa330f9573f3",
            "ec29112dd5afa0611ce80d1b7f02629c",
        ),
        sizes=_per_file(9912422, 28881, 1648877, 4542),
    ),
    "fashion-mnist": DatasetInfo(
        name="fashion-mnist",
        title="Fashion-MNIST",
        homepage="https://github.com/zalandoresearch/fashion-mnist",
        license="MIT (Zalando SE)",
        classes=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"),
        mean=0.2860,
        std=0.3530,
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        md5=_per_file(
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "25c81989df183df01b3e8a0aad5dffbe",
            "bef4ecab320f06d8554ea6380940ec79",
            "bb300cfdad3c16e7a12a480ee83cd310",
        ),
        sizes=_per_file(26421880, 29515, 4422102, 5148),
    ),
    "kmnist": DatasetInfo(
        name="kmnist",
        title="Kuzushiji-MNIST",
        homepage="https://github.com/rois-codh/kmnist",
        license="CC BY-SA 4.0 (ROIS-DS Center for Open Data in the Humanities)",
        classes=("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"),
        mean=0.1918,
        std=0.3483,
        mirrors=("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
        md5=_per_file(
            "bdb82020997e1d708af4cf47b453dcf7",
            "e144d726b3acfaa3e44228e80efcd344",
            "5c965bf0a639b31b8f53240b1b52f4d7",
            "7320c461ea6c1c855c0b718fb2a4b134",
        ),
        sizes=_per_file(18165135, 29497, 3041136, 5120),
    ),
    "digits": DatasetInfo(
        name="digits",
        title="UCI 8x8 handwritten digits (bundled)",
        homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
        license="CC BY 4.0 (E. Alpaydin, C. Kaynak)",
        classes=DIGITS,
        mean=0.3054,
        std=0.3760,
        pixel_max=16.0,
        split_sizes={"train": 1437, "test": 360},
        image_shape=(8, 8),
    ),
    "cifar10": DatasetInfo(
        name="cifar10",
        title="CIFAR-10 (binary version)",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        license="no licence stated; cite A. Krizhevsky, Learning Multiple Layers of Features from Tiny Images (2009)",
        classes=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        md5={"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"},
        sizes={"cifar-10-binary.tar.gz": 170052171},
        split_sizes={"train": 50000, "test": 10000},
        image_shape=(3, 32, 32),
        records=RecordArchive(
            archive="cifar-10-binary.tar.gz",
            folder="cifar-10-batches-bin",
            files={"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
            labels=(10,),
            extras=("batches.meta.txt", "readme.html"),
            pickle_version=("cifar-10-python.tar.gz", "cifar-10-batches-py"),
        ),
        augment=True,
    ),
    "cifar100": DatasetInfo(
        name="cifar100",
        title="CIFAR-100 (binary version, the 100 fine labels)",
        homepage="https://www.cs.toronto.edu/~kriz/cifar.html",
        license="no licence stated; cite A. Krizhevsky, Learning Multiple Layers of Features from Tiny Images (2009)",
        classes=CIFAR100_CLASSES,
        mean=(0.5071, 0.4865, 0.4409),
        std=(0.2673, 0.2564, 0.2762),
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        md5={"cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8"},
        sizes={"cifar-100-binary.tar.gz": 168513733},
        split_sizes={"train": 50000, "test": 10000},
        image_shape=(3, 32, 32),
        records=RecordArchive(
            archive="cifar-100-binary.tar.gz",
            folder="cifar-100-binary",
            files={"train": ("train.bin",), "test": ("test.bin",)},
            labels=(20, 100),
            extras=("coarse_label_names.txt", "fine_label_names.txt", "readme.html"),
            pickle_version=("cifar-100-python.tar.gz", "cifar-100-python"),
        ),
        augment=True,
    ),
}


def dataset_info(name):
    """The registry entry for ``name`` (case-insensitive; "_" may stand for "-")."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}")
    return DATASETS[key]

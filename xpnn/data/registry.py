"""The datasets xpnn knows: file names, download mirrors, published checksums, classes and the
normalisation constants, in one table (``DATASETS``) that users and tests can extend or patch."""

from dataclasses import dataclass, field

from ..errors import ConfigError


@dataclass(frozen=True)
class DatasetInfo:
    """What xpnn knows about one dataset.

    ``mean`` and ``std`` are those of the training images scaled to [0, 1] (pixel / ``pixel_max``);
    ``md5`` and ``sizes`` map each canonical ``.gz`` file name to its published digest and size in
    bytes (a download may not exceed the size; files found on disk may be smaller, as test files
    are); ``split_sizes`` and ``image_shape`` bound what an IDX header of the dataset may declare;
    a dataset without ``mirrors`` is bundled with xpnn and never downloaded.
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

    @property
    def bundled(self):
        return not self.mirrors

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
}


def dataset_info(name):
    """The registry entry for ``name`` (case-insensitive; "_" may stand for "-")."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; expected one of: {', '.join(DATASETS)}")
    return DATASETS[key]

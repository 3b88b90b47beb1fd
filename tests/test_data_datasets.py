import gzip
import hashlib
import os

import numpy as np
import pytest
from data_helpers import REAL_MNIST, isolated_env, write_mnist  # noqa: F401 (isolated_env is a fixture)

from xpnn.data import DATASETS, Dataset, load_dataset, write_idx
from xpnn.data.datasets import data_dirs
from xpnn.errors import ConfigError, DataError, MissingDataError

pytestmark = pytest.mark.usefixtures("isolated_env")


@pytest.mark.parametrize("dotted", [False, True])
@pytest.mark.parametrize("gz", [False, True])
def test_each_spelling_loads(tmp_path, dotted, gz):
    images, labels = write_mnist(tmp_path, "test", dotted=dotted, gz=gz)
    ds = load_dataset("mnist", train=False, root=tmp_path, download=False)
    assert (ds.name, ds.split, len(ds)) == ("mnist", "test", 12)
    assert ds.images.dtype == np.uint8 and ds.labels.dtype == np.int64
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)


def test_arrays_are_normalised(tmp_path):
    write_mnist(tmp_path, "train", n=20)
    ds = load_dataset("mnist", root=tmp_path, download=False)
    x, y = ds.arrays()
    assert x.shape == (20, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    expected = (ds.images.astype(np.float64) / 255 - 0.1307) / 0.3081
    np.testing.assert_allclose(x[:, 0], expected, rtol=1e-5, atol=1e-5)
    xf, yf = ds.arrays(flatten=True)
    assert xf.shape == (20, 784)
    np.testing.assert_array_equal(xf, x.reshape(20, -1))
    np.testing.assert_array_equal(yf, y)


def test_root_may_hold_a_dataset_folder(tmp_path):
    images, _ = write_mnist(tmp_path / "mnist", "test")
    np.testing.assert_array_equal(load_dataset("mnist", train=False, root=tmp_path, download=False).images, images)
    np.testing.assert_array_equal(load_dataset("mnist", train=False, root=tmp_path / "mnist", download=False).images, images)


def test_a_folder_named_after_another_dataset_is_not_used(tmp_path):
    write_mnist(tmp_path / "mnist", "test")
    with pytest.raises(DataError, match="fashion-mnist: missing t10k-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", train=False, root=tmp_path / "mnist", download=False)


def test_directory_precedence(tmp_path, monkeypatch):
    root, env, cache = tmp_path / "root", tmp_path / "env", tmp_path / "xdg"
    for seed, directory in enumerate([root, env, cache / "xpnn" / "mnist"]):
        write_mnist(directory, "test", n=3 + seed, seed=seed)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    assert len(load_dataset("mnist", train=False, download=False)) == 5
    monkeypatch.setenv("XPNN_DATA_DIR", str(env))
    assert len(load_dataset("mnist", train=False, download=False)) == 4
    assert len(load_dataset("mnist", train=False, root=root, download=False)) == 3


def test_cache_defaults_to_home(tmp_path, monkeypatch):
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data_dirs("kmnist") == [tmp_path / ".cache" / "xpnn" / "kmnist"]


def test_missing_files_without_download(tmp_path):
    with pytest.raises(MissingDataError) as err:
        load_dataset("mnist", root=tmp_path, download=False)
    message = str(err.value)
    assert "mnist: missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz (download=False)" in message
    assert f"Put them in {tmp_path / 'mnist'} (searched: {tmp_path / 'mnist'}, {tmp_path};" in message
    assert "--dataset" not in message, "a command-line flag means nothing to a Python caller"
    assert list(tmp_path.iterdir()) == [], "looking for files creates no folder"


def test_fashion_and_kmnist_share_the_format(tmp_path):
    write_mnist(tmp_path / "fashion-mnist", "test")
    write_mnist(tmp_path / "kmnist", "test")
    fashion = load_dataset("fashion-mnist", train=False, root=tmp_path, download=False)
    assert fashion.classes == ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
    assert load_dataset("KMNIST", train=False, root=tmp_path, download=False).classes[:4] == ("o", "ki", "su", "tsu")
    assert load_dataset("fashion_mnist", train=False, root=tmp_path, download=False).name == "fashion-mnist"


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown dataset 'cifar'; expected one of: mnist, fashion-mnist, kmnist, digits"):
        load_dataset("cifar")


def test_count_mismatch(tmp_path):
    write_mnist(tmp_path, "test", n=12)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.zeros(11, dtype=np.uint8))
    with pytest.raises(DataError, match=r"mnist \(test\): t10k-images-idx3-ubyte.gz has 12 images but t10k-labels-idx1-ubyte.gz has 11 labels"):
        load_dataset("mnist", train=False, root=tmp_path, download=False)


def test_labels_out_of_range(tmp_path):
    write_mnist(tmp_path, "test", n=12)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.array([0] * 10 + [12, 10], dtype=np.uint8))
    with pytest.raises(DataError, match=r"mnist \(test\): expected labels in 0..9, found 12 \(2 out of range\)"):
        load_dataset("mnist", train=False, root=tmp_path, download=False)


def test_labels_file_where_images_expected(tmp_path):
    write_mnist(tmp_path, "test")
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", np.zeros(12, dtype=np.uint8))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: expected 3 dimension\(s\), found 1 \(12\)"):
        load_dataset("mnist", train=False, root=tmp_path, download=False)


def test_dataset_validates_its_arrays():
    with pytest.raises(DataError, match=r"toy \(train\): expected 2 labels \(one per image\), found shape \(3,\)"):
        Dataset("toy", "train", np.zeros((2, 4, 4), np.uint8), np.zeros(3, np.int64), ("a", "b"))


def test_digits_are_bundled():
    train, test = load_dataset("digits"), load_dataset("digits", train=False)
    assert (len(train), len(test)) == (1437, 360)
    assert train.images.shape == (1437, 8, 8) and train.images.dtype == np.uint8
    assert train.images.max() == 16 and set(np.unique(train.labels)) == set(range(10))
    x, _ = train.arrays()
    assert x.shape == (1437, 1, 8, 8)
    assert abs(float(x.mean())) < 1e-3 and abs(float(x.std()) - 1) < 1e-3  # the registry's train mean/std
    everything = np.concatenate([train.images, test.images]).reshape(1797, -1)
    assert len(np.unique(everything, axis=0)) > 1700  # the two splits are disjoint rows, not copies


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"no MNIST copy at {REAL_MNIST}")
def test_real_mnist():
    test = load_dataset("mnist", train=False, root=REAL_MNIST, download=False)
    assert test.images.shape == (10000, 28, 28)
    np.testing.assert_array_equal(np.bincount(test.labels), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    content = gzip.decompress((REAL_MNIST / "t10k-labels-idx1-ubyte.gz").read_bytes())
    assert hashlib.md5(content).hexdigest() == "27ae3e4e09519cfbb04c329615203637"
    train = load_dataset("mnist", root=REAL_MNIST.parent, download=False)
    assert len(train) == 60000
    pixels = train.images.astype(np.float32) / 255
    info = DATASETS["mnist"]
    assert abs(float(pixels.mean()) - info.mean) < 1e-4 and abs(float(pixels.std()) - info.std) < 1e-4


def test_a_missing_labels_file_is_named_alone(tmp_path):
    """Images in the root itself, labels missing: only the labels file is missing, and where it belongs."""
    write_mnist(tmp_path, "test")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as err:
        load_dataset("mnist", train=False, root=tmp_path, download=False)
    message = str(err.value)
    assert message.startswith(f"mnist: missing t10k-labels-idx1-ubyte.gz (download=False). Put them in {tmp_path} (searched:")
    assert "t10k-images" not in message


def test_a_header_beyond_the_registry_is_refused(tmp_path):
    write_mnist(tmp_path, "test")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes([0, 0, 8, 1]) + (10001).to_bytes(4, "big"))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: header says 10001; expected at most 10000$"):
        load_dataset("mnist", train=False, root=tmp_path, download=False)


def test_a_fifo_in_place_of_a_data_file_is_an_error(tmp_path):
    write_mnist(tmp_path, "test")
    (tmp_path / "t10k-images-idx3-ubyte.gz").unlink()
    os.mkfifo(tmp_path / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: expected a regular IDX file, found a FIFO \(named pipe\)"):
        load_dataset("mnist", train=False, root=tmp_path, download=False)


@pytest.mark.parametrize(
    "images, classes, found",
    [((0, 28, 28), ("a",), "found 0 images of 28x28"), ((2, 0, 0), ("a",), "found 2 images of 0x0"), ((2, 1, 1), (), "expected at least one class, found none")],
)
def test_a_dataset_that_cannot_train_is_refused(images, classes, found):
    with pytest.raises(DataError, match=rf"^toy \(train\): .*{found}$"):
        Dataset("toy", "train", np.zeros(images, np.uint8), np.zeros(images[0], np.int64), classes)


def test_an_empty_idx_split_names_the_dataset(tmp_path):
    write_mnist(tmp_path, "test", n=0)
    with pytest.raises(DataError, match=r"^mnist \(test\): expected at least one image of at least 1x1 pixels to train or evaluate on, found 0 images of 28x28$"):
        load_dataset("mnist", train=False, root=tmp_path, download=False)

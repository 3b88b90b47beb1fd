import fcntl
import hashlib
import http.server
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from data_helpers import REAL_MNIST, closed_port, isolated_env, serve, serve_handler, write_mnist  # noqa: F401 (isolated_env is a fixture)

from xpnn.data import DATASETS, download, load_dataset
from xpnn.data import fetch as fetch_module
from xpnn.data.fetch import mirrors
from xpnn.errors import ConfigError, DataError

pytestmark = pytest.mark.usefixtures("isolated_env")
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def _trust(monkeypatch, directory):
    """Make the registry expect the md5s of the files in ``directory`` (they are not the canonical bytes)."""
    for name in TEST_FILES:
        monkeypatch.setitem(DATASETS["mnist"].md5, name, hashlib.md5((directory / name).read_bytes()).hexdigest())


def test_download_checks_md5_and_loads(tmp_path, monkeypatch):
    images, labels = write_mnist(tmp_path / "served", "test")
    _trust(monkeypatch, tmp_path / "served")
    with serve(tmp_path / "served") as url:
        monkeypatch.setenv("XPNN_MNIST_MIRROR", url)
        ds = load_dataset("mnist", train=False, root=tmp_path / "data")
    np.testing.assert_array_equal(ds.images, images)
    np.testing.assert_array_equal(ds.labels, labels)
    assert sorted(p.name for p in (tmp_path / "data" / "mnist").iterdir()) == sorted(TEST_FILES)


@pytest.mark.skipif(not REAL_MNIST.is_dir(), reason=f"no MNIST copy at {REAL_MNIST}")
def test_download_real_files(tmp_path, monkeypatch):
    served = tmp_path / "served"
    served.mkdir()
    for name in TEST_FILES:
        shutil.copy(REAL_MNIST / name, served / name)
    _trust(monkeypatch, served)
    with serve(served) as url:
        monkeypatch.setenv("XPNN_MNIST_MIRROR", url)
        directory = download("mnist", train=False)
    assert directory == tmp_path / "cache" / "xpnn" / "mnist"
    assert len(load_dataset("mnist", train=False, download=False)) == 10000


def test_corrupt_download_is_not_kept(tmp_path, monkeypatch):
    served = tmp_path / "served"
    write_mnist(served, "test")
    _trust(monkeypatch, served)
    damaged = bytearray((served / TEST_FILES[0]).read_bytes())
    damaged[100] ^= 0xFF
    (served / TEST_FILES[0]).write_bytes(bytes(damaged))
    expected, found = DATASETS["mnist"].md5[TEST_FILES[0]], hashlib.md5(damaged).hexdigest()
    with serve(served) as url:
        monkeypatch.setenv("XPNN_MNIST_MIRROR", url)
        with pytest.raises(DataError, match=f"t10k-images-idx3-ubyte.gz: checksum mismatch: expected md5 {expected}, found {found}"):
            load_dataset("mnist", train=False, root=tmp_path / "data")
    assert not (tmp_path / "data").exists(), "the folders made for the download go with it"


class _InterruptedBar:
    """A progress bar whose first update is a Ctrl-C, i.e. an interrupt in the middle of a download."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False

    def update(self, n):
        raise KeyboardInterrupt


def test_interrupted_download_leaves_no_file(tmp_path, monkeypatch):
    write_mnist(tmp_path / "served", "test")
    _trust(monkeypatch, tmp_path / "served")
    monkeypatch.setattr(fetch_module, "progress_bar", _InterruptedBar)
    with serve(tmp_path / "served") as url:
        monkeypatch.setenv("XPNN_MNIST_MIRROR", url)
        with pytest.raises(KeyboardInterrupt):
            load_dataset("mnist", train=False, root=tmp_path / "data")
    assert not (tmp_path / "data").exists(), "the folders made for the download go with it"


def test_falls_back_to_the_next_mirror(tmp_path, monkeypatch):
    images, _ = write_mnist(tmp_path / "served", "test")
    _trust(monkeypatch, tmp_path / "served")
    (tmp_path / "empty").mkdir()
    with serve(tmp_path / "empty") as missing, serve(tmp_path / "served") as good:
        dead = f"http://127.0.0.1:{closed_port()}/"
        monkeypatch.setenv("XPNN_MNIST_MIRROR", f"{dead}, {missing} {good}")
        np.testing.assert_array_equal(load_dataset("mnist", train=False, root=tmp_path / "data").images, images)


def test_unreachable_server_explains_what_to_do(tmp_path):
    with pytest.raises(DataError) as err:
        load_dataset("fashion-mnist", root=tmp_path)
    message = str(err.value)
    assert message.startswith(
        "fashion-mnist: missing train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz and could not be downloaded (http://127.0.0.1:"
    )
    assert "Connection refused" in message
    assert f"Put them in {tmp_path / 'fashion-mnist'} (searched: {tmp_path / 'fashion-mnist'}, {tmp_path};" in message
    assert message.endswith(f"get them from {' or '.join(mirrors(DATASETS['fashion-mnist']))}")
    assert list(tmp_path.iterdir()) == [], "the folder made for the download goes with it"


def test_registry_mirrors_are_the_canonical_ones():
    assert DATASETS["mnist"].mirrors[0] == "https://ossci-datasets.s3.amazonaws.com/mnist/"
    assert DATASETS["mnist"].md5["train-images-idx3-ubyte.gz"] == "f68b3c2dcbeaaa9fbdd348bbdeb94873"
    assert all(len(info.md5) == 4 for info in DATASETS.values() if not info.bundled and info.records is None)
    assert DATASETS["cifar10"].mirrors == DATASETS["cifar100"].mirrors == ("https://www.cs.toronto.edu/~kriz/",)
    assert DATASETS["cifar10"].md5 == {"cifar-10-binary.tar.gz": "c32a1d4ab5d03f1284b67883e8d87530"}
    assert DATASETS["cifar100"].md5 == {"cifar-100-binary.tar.gz": "03b5dce01913d631647c71ecec9e9cb8"}
    assert DATASETS["cifar10"].sizes == {"cifar-10-binary.tar.gz": 170052171}
    assert DATASETS["cifar100"].sizes == {"cifar-100-binary.tar.gz": 168513733}
    assert download("digits").joinpath("digits.npz").is_file()


def test_missing_on_every_mirror_names_the_http_status(tmp_path, monkeypatch):
    (tmp_path / "empty").mkdir()
    with serve(tmp_path / "empty") as url:
        monkeypatch.setenv("XPNN_MNIST_MIRROR", url)
        with pytest.raises(DataError, match=f"could not be downloaded \\({url}t10k-images-idx3-ubyte.gz: HTTP 404 File not found\\)"):
            load_dataset("mnist", train=False, root=tmp_path / "data")


def test_registry_knows_each_file_size():
    assert DATASETS["mnist"].sizes == {
        "train-images-idx3-ubyte.gz": 9912422,
        "train-labels-idx1-ubyte.gz": 28881,
        "t10k-images-idx3-ubyte.gz": 1648877,
        "t10k-labels-idx1-ubyte.gz": 4542,
    }
    assert all(info.sizes.keys() == info.md5.keys() for info in DATASETS.values() if not info.bundled)


class _Streaming(http.server.BaseHTTPRequestHandler):
    """Answers every GET with 200 and a body of zeros sent ``piece`` bytes every ``pause`` s, forever
    (until the client hangs up), announcing ``length`` as Content-Length when it is set."""

    piece, pause, length = 1 << 16, 0.0, None

    def do_GET(self):
        self.send_response(200)
        if self.length is not None:
            self.send_header("Content-Length", str(self.length))
        self.end_headers()
        try:
            while True:
                self.wfile.write(bytes(self.piece))
                self.wfile.flush()
                time.sleep(self.pause)
        except OSError:  # the client gave up, as it should
            pass

    def log_message(self, *args):
        pass


def _streaming(**settings):
    return type("Handler", (_Streaming,), settings)


def test_a_server_that_never_ends_is_cut_at_the_registry_size(tmp_path, monkeypatch):
    monkeypatch.setitem(DATASETS["mnist"].sizes, TEST_FILES[0], 100_000)
    with serve_handler(_streaming()) as url:
        monkeypatch.setenv("XPNN_MNIST_MIRROR", url)
        with pytest.raises(DataError) as err:
            load_dataset("mnist", train=False, root=tmp_path / "data")
    assert str(err.value) == (
        f"t10k-images-idx3-ubyte.gz: expected at most 100000 bytes, found more (from {url}{TEST_FILES[0]}, which did not stop); "
        "the download was deleted"
    )
    assert not (tmp_path / "data").exists(), "the folders made for the download go with it"


def test_an_announced_size_beyond_the_registry_is_refused_before_reading(tmp_path, monkeypatch):
    with serve_handler(_streaming(length=10**12)) as url:
        monkeypatch.setenv("XPNN_MNIST_MIRROR", url)
        with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: expected at most 1648877 bytes, found Content-Length 1000000000000 \(from http"):
            load_dataset("mnist", train=False, root=tmp_path / "data")
    assert not (tmp_path / "data").exists(), "the folders made for the download go with it"


def test_a_dripping_server_hits_the_deadline(tmp_path, monkeypatch):
    """One byte every 20 ms never trips the per-read timeout; the whole-file deadline stops it."""
    monkeypatch.setattr(fetch_module, "DEADLINE_S", 0.3)
    started = time.monotonic()
    with serve_handler(_streaming(piece=1, pause=0.02)) as url:
        monkeypatch.setenv("XPNN_MNIST_MIRROR", url)
        with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.gz: expected the download to finish within 0.3 s, found \d+ bytes after that .*dripping"):
            load_dataset("mnist", train=False, root=tmp_path / "data")
    assert time.monotonic() - started < 3
    assert not (tmp_path / "data").exists(), "the folders made for the download go with it"


def test_stale_partial_downloads_are_removed_once(tmp_path, monkeypatch, capsys):
    """A killed download's temporaries go, said in one line; other files and a live download's stay."""
    write_mnist(tmp_path / "served", "test")
    _trust(monkeypatch, tmp_path / "served")
    target = tmp_path / "data" / "mnist"
    target.mkdir(parents=True)
    stale = [target / ".t10k-images-idx3-ubyte.gz.k3j_x9a2.tmp", target / ".t10k-labels-idx1-ubyte.gz.abcdefgh.tmp"]
    kept = [target / ".t10k-images-idx3-ubyte.gz.notes", target / "mine.tmp", target / ".t10k-images-idx3-ubyte.gz.live0000.tmp"]
    for path in stale + kept:
        path.write_bytes(b"partial")
    with open(kept[-1], "rb") as live, serve(tmp_path / "served") as url:
        fcntl.flock(live.fileno(), fcntl.LOCK_EX)
        monkeypatch.setenv("XPNN_MNIST_MIRROR", url)
        load_dataset("mnist", train=False, root=tmp_path / "data")
    lines = [line for line in capsys.readouterr().err.splitlines() if "stale" in line]
    assert lines == [f"xpnn: removed 2 stale partial download(s) from {target}: {stale[0].name}, {stale[1].name}"]
    assert sorted(p.name for p in target.iterdir()) == sorted([*TEST_FILES, *(p.name for p in kept)])
    assert fetch_module.remove_stale_downloads(target, TEST_FILES) == [kept[-1]]  # its process let go: now it is stale
    assert not kept[-1].exists()


@pytest.mark.parametrize("value", ["ftp:/x", "not a url", "/srv/mirror", "http://", "https://ok.example/, file:///srv/mnist"])
def test_a_mirror_that_is_not_a_url_is_a_config_error(tmp_path, monkeypatch, value):
    monkeypatch.setenv("XPNN_MNIST_MIRROR", value)
    with pytest.raises(ConfigError, match="^XPNN_MNIST_MIRROR: expected http:// or https:// mirror URLs separated by commas or spaces, found '"):
        load_dataset("mnist", train=False, root=tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_a_killed_download_is_cleaned_up_by_the_next(tmp_path, monkeypatch, capsys):
    """SIGKILL a real download mid-way: its temporary stays behind, and the next download removes it."""
    target = tmp_path / "data" / "mnist"
    with serve_handler(_streaming(piece=1, pause=0.01)) as url:
        code = f"from xpnn.data.fetch import fetch; fetch({url + TEST_FILES[0]!r}, {str(target / TEST_FILES[0])!r})"
        target.mkdir(parents=True)
        child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 20
            while not list(target.iterdir()) and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(0.1)
        finally:
            child.kill()
            child.wait()
    leftovers = [p.name for p in target.iterdir()]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".{TEST_FILES[0]}.")
    write_mnist(tmp_path / "served", "test")
    _trust(monkeypatch, tmp_path / "served")
    with serve(tmp_path / "served") as url:
        monkeypatch.setenv("XPNN_MNIST_MIRROR", url)
        load_dataset("mnist", train=False, root=tmp_path / "data")
    assert f"xpnn: removed 1 stale partial download(s) from {target}: {leftovers[0]}" in capsys.readouterr().err
    assert sorted(p.name for p in target.iterdir()) == sorted(TEST_FILES)

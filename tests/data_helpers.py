"""Shared helpers for the data tests: synthetic MNIST-format files and CIFAR binary archives, a local
HTTP server, no network."""

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import http.server
import socket
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from xpnn.data import DATASETS, write_idx
from xpnn.data.fetch import mirror_variable

REAL_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def write_mnist(directory, split="test", n=12, dotted=False, gz=True, seed=0):
    """Write a small MNIST-format split (n images of 28x28, labels cycling 0..9), spelled
    ``t10k-images.idx3-ubyte`` when ``dotted``, with ``.gz`` when ``gz``; returns (images, labels)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = (np.arange(n) % 10).astype(np.uint8)
    prefix = "train" if split == "train" else "t10k"
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
        stem = f"{prefix}-{kind}-ubyte"
        if dotted:
            stem = stem.replace("-idx", ".idx")
        write_idx(directory / (stem + (".gz" if gz else "")), array)
    return images, labels


def closed_port():
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve(directory):
    """Serve ``directory`` over HTTP on 127.0.0.1 for the duration; yields the base URL."""
    return serve_handler(functools.partial(_QuietHandler, directory=str(directory)))


@contextlib.contextmanager
def serve_handler(handler):
    """Answer HTTP requests on 127.0.0.1 with ``handler`` (a request handler class) for the duration;
    yields the base URL."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.fixture
def isolated_env(monkeypatch, tmp_path):
    """No data directory from the environment, a private cache, and every mirror pointing at a closed
    local port, so no test can reach the network or the user's files."""
    monkeypatch.delenv("XPNN_DATA_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    dead = f"http://127.0.0.1:{closed_port()}/"
    for info in DATASETS.values():
        monkeypatch.setenv(mirror_variable(info), dead)
    return tmp_path


# ---- CIFAR binary archives --------------------------------------------------------------------------


def small_cifar(monkeypatch, name="cifar10", train=10, test=4):
    """Make the registry's ``name`` expect ``train`` and ``test`` records per split (a whole number per
    file: CIFAR-10 spreads train over 5 files), as the real archive's 50000 and 10000; returns the info."""
    info = dataclasses.replace(DATASETS[name], split_sizes={"train": train, "test": test}, md5=dict(DATASETS[name].md5))
    monkeypatch.setitem(DATASETS, name, info)
    return info


def cifar_records(info, split, seed=0):
    """{file name: record bytes} of ``split`` in the official layout (random pixels, labels in range),
    and the (images (N, 3, 32, 32), labels (N,)) they hold, in file order."""
    rng = np.random.default_rng(seed + (split == "test"))
    layout = info.records
    per_file = info.records_per_file(split)
    files, images, labels = {}, [], []
    for name in layout.files[split]:
        pixels = rng.integers(0, 256, size=(per_file, *info.image_shape), dtype=np.uint8)
        label_bytes = np.stack([rng.integers(0, bound, size=per_file) for bound in layout.labels], axis=1).astype(np.uint8)
        files[name] = np.concatenate([label_bytes, pixels.reshape(per_file, -1)], axis=1).tobytes()
        images.append(pixels)
        labels.append(label_bytes[:, -1].astype(np.int64))
    return files, (np.concatenate(images), np.concatenate(labels))


def tar_member(name, data=b"", kind=tarfile.REGTYPE, size=None, **fields):
    """A (TarInfo, data) pair; ``size`` overrides the header's size (``data`` is what follows it)."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.size = len(data) if size is None else size
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in fields.items():
        setattr(info, key, value)
    return info, data


def tar_gz(members):
    """The bytes of a .tar.gz holding ``members`` ((TarInfo, data) pairs), in order, written block by
    block (GNU headers, base-256 sizes), so that a header may claim a size its data does not have."""
    blocks = bytearray()
    for info, data in members:
        blocks += info.tobuf(format=tarfile.GNU_FORMAT) + data + bytes(-len(data) % tarfile.BLOCKSIZE)
    blocks += bytes(2 * tarfile.BLOCKSIZE)
    blocks += bytes(-len(blocks) % tarfile.RECORDSIZE)
    return gzip.compress(bytes(blocks), mtime=0)


def cifar_members(info, seed=0):
    """The official archive's members in order (folder, text files, every split's files) and the
    {split: (images, labels)} they hold."""
    layout = info.records
    members = [tar_member(layout.folder, kind=tarfile.DIRTYPE)]
    members += [tar_member(f"{layout.folder}/{extra}", b"airplane\nautomobile\n") for extra in layout.extras if extra.endswith(".txt")]
    held = {}
    for split in ("train", "test"):
        files, held[split] = cifar_records(info, split, seed)
        members += [tar_member(f"{layout.folder}/{name}", data) for name, data in files.items()]
    return members, held


def write_cifar(directory, info, form="archive", seed=0):
    """Write ``info``'s dataset into ``directory`` as its archive (``form="archive"``; the registry is
    told its md5) or as the extracted folder (``"folder"``); returns {split: (images, labels)}."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    members, held = cifar_members(info, seed)
    layout = info.records
    if form == "archive":
        data = tar_gz(members)
        (directory / layout.archive).write_bytes(data)
        info.md5[layout.archive] = hashlib.md5(data).hexdigest()
    else:
        (directory / layout.folder).mkdir(exist_ok=True)
        for member, data in members[1:]:
            (directory / member.name).write_bytes(data)
    return held

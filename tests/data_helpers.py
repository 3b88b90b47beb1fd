"""Shared helpers for the data tests: synthetic MNIST-format files, a local HTTP server, no network."""

import contextlib
import functools
import http.server
import socket
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

"""One ``backend`` fixture runs every layer, loss and optimizer test on NumPy, array_api_strict
(on its default device, and on a second device, "device1", where any array a layer creates on the
default device instead fails the test: array_api_strict refuses to combine arrays of two devices)
and CuPy (skipped cleanly where no GPU is present)."""

from pathlib import Path

import numpy as np
import pytest

from xpnn import backend as xb
from xpnn.errors import BackendUnavailableError

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


class Backend:
    """A backend under test: its name, the device string layers take, and its namespace."""

    def __init__(self, name, device):
        self.name = name
        self.device = device
        self.xp = xb.resolve(device)
        self.place = xb.resolve_device(device)

    def asarray(self, host, dtype=None):
        host = np.asarray(host)
        target = None if dtype is None else getattr(self.xp, np.dtype(dtype).name)
        return xb.asarray(host, self.xp, target, self.place)

    def __repr__(self):
        return self.name


BACKEND_DEVICES = {
    "numpy": "cpu",
    "array_api_strict": "array_api_strict",
    "array_api_strict:device1": "array_api_strict:device1",
    "cupy": "cuda",
}


@pytest.fixture(params=list(BACKEND_DEVICES))
def backend(request):
    try:
        return Backend(request.param, BACKEND_DEVICES[request.param])
    except BackendUnavailableError as exc:
        pytest.skip(f"{request.param} unavailable: {exc}")


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture
def mnist_dir():
    if not (MNIST_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"real MNIST not found at {MNIST_DIR}")
    return MNIST_DIR

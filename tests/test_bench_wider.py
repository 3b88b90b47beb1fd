"""Issue 20's benchmark networks: bench.runners.build_wider's xpnn models ("cnn3264", the
32/64-channel LeNet-style CNN; "torchmnist", PyTorch's MNIST example network) are layer for layer
their PyTorch twins in bench/torch_models.py: the twin's weights load and give the same outputs
(dropout off, in eval mode)."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import xpnn

torch = pytest.importorskip("torch")
BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", ["cnn3264", "torchmnist"])
def test_wider_bench_models_match_their_torch_twins(name):
    runners, twins = _load("runners"), _load("torch_models")
    assert name in runners.WIDER
    torch.manual_seed(0)
    theirs, mine = twins.build(name), runners.build_wider(name)
    assert xpnn.load_torch_state_dict(mine, theirs.state_dict()) is mine
    x = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    theirs.eval()
    mine.eval()
    with torch.no_grad():
        expected = theirs(x).numpy()
    with xpnn.no_grad():
        got = np.asarray(mine(x.numpy()))
    assert got.shape == (3, 10)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)

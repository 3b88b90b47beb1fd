"""Backend resolution, device moves, dtype policy and their error messages."""

import importlib.util

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn.errors import BackendUnavailableError, DeviceError, DTypeError

HAS_CUPY = importlib.util.find_spec("cupy") is not None


@pytest.mark.parametrize("spec", [None, "cpu", "numpy", "CPU", np])
def test_cpu_specs_resolve_to_numpy(spec):
    xp = xb.resolve(spec)
    assert xb.is_numpy(xp) and xb.device_name(xp) == "cpu"


def test_namespaces_and_arrays_resolve_to_themselves():
    strict = xb.resolve("array_api_strict")
    assert xb.resolve(strict) is strict
    assert xb.resolve(strict.zeros(2)) is strict
    assert xb.is_strict(strict) and xb.device_name(strict) == "array_api_strict"
    assert xb.is_numpy(xb.resolve(np.zeros(2)))


@pytest.mark.skipif(HAS_CUPY, reason="CuPy is installed here")
@pytest.mark.parametrize("spec", ["cuda", "cuda:0", "gpu"])
def test_cuda_without_cupy_says_how_to_install(spec):
    with pytest.raises(BackendUnavailableError, match=r"device 'cuda' needs CuPy, which is not installed; install CuPy with: pip install 'xpnn\[cuda12\]'"):
        xb.resolve(spec)


@pytest.mark.parametrize("spec, message", [
    ("tpu", "expected a device 'cpu', 'cuda', 'cuda:N' or 'array_api_strict\\[:NAME\\]', got 'tpu'"),
    ("cuda:x", "expected a device like 'cuda:0', got 'cuda:x'"),
    (3.5, "expected a device string, an array namespace or an array, got float"),
])
def test_bad_device_specs(spec, message):
    with pytest.raises(BackendUnavailableError, match=message):
        xb.resolve(spec)


def test_available_lists_cpu_and_strict():
    devices = xb.available()
    assert devices[0] == "cpu" and "array_api_strict" in devices
    assert all(d.startswith("cuda:") for d in devices[2:])


def test_asarray_and_to_numpy_round_trip(backend, rng):
    host = rng.normal(size=(3, 4)).astype(np.float32)
    on_device = xb.asarray(host, backend.xp)
    assert type(on_device) is xb.array_type(backend.xp)
    assert xb.asarray(on_device, backend.xp) is on_device, "no copy when already on the device"
    np.testing.assert_array_equal(xb.to_numpy(on_device), host)
    as64 = xb.asarray(host, backend.xp, backend.xp.float64)
    assert as64.dtype == backend.xp.float64


def test_namespace_of_rejects_mixed_backends():
    strict = xb.resolve("array_api_strict")
    with pytest.raises(DeviceError, match="expected arrays of one backend, got numpy.ndarray float64 \\(2,\\), array_api_strict.Array float64 \\(2,\\)"):
        xb.namespace_of(np.zeros(2), strict.zeros(2))


@pytest.mark.parametrize("dtype", [np.float32, "float64", np.dtype("float16"), None])
def test_resolve_dtype(backend, dtype):
    if backend.name.startswith("array_api_strict") and dtype is not None and np.dtype(dtype).name == "float16":
        with pytest.raises(DTypeError, match="Conv2d: dtype float16 is not available on array_api_strict"):
            xb.resolve_dtype(dtype, backend.xp, where="Conv2d")
        return
    resolved = xb.resolve_dtype(dtype, backend.xp)
    assert xb.dtype_name(resolved) == ("float32" if dtype is None else np.dtype(dtype).name)


def test_resolve_dtype_rejects_integers():
    with pytest.raises(DTypeError, match=r"Linear: expected a floating dtype \(float16, float32, float64\), got int64"):
        xb.resolve_dtype(np.int64, xb.resolve(None), where="Linear")


def test_strict_dtypes_have_names():
    strict = xb.resolve("array_api_strict")
    assert xb.dtype_name(strict.float32) == "float32"


def test_uniform_is_seeded_identically_on_host_backends():
    a = xb.uniform((5,), xb.resolve("cpu"), np.float32, np.random.default_rng(3))
    strict = xb.resolve("array_api_strict")
    b = xb.uniform((5,), strict, strict.float32, np.random.default_rng(3))
    np.testing.assert_array_equal(a, xb.to_numpy(b))
    assert np.all((a >= 0) & (a < 1))


def test_manual_seed_and_rng_state_round_trip():
    xpnn.manual_seed(5)
    state = xpnn.random.get_rng_state()
    first = xpnn.random.default_generator().random(3)
    xpnn.random.set_rng_state(state)
    np.testing.assert_array_equal(xpnn.random.default_generator().random(3), first)


def test_modules_move_between_array_api_strict_devices():
    strict = pytest.importorskip("array_api_strict")
    from xpnn import nn

    layer = nn.Linear(3, 2, xp="array_api_strict:device1")
    assert layer.weight.data.device == strict.Device("device1") == layer.device
    x = xb.asarray(np.ones((4, 3), dtype=np.float32), layer.xp, device=layer.device)
    assert layer(x).device == strict.Device("device1")
    layer.to("array_api_strict")
    assert layer.weight.data.device == strict.Device("CPU_DEVICE") and layer.weight.grad.device == strict.Device("CPU_DEVICE")
    with pytest.raises(DeviceError, match=r"Linear\(3, 2\): expected an array on array_api_strict.Device\('CPU_DEVICE'\), got one on array_api_strict.Device\('device1'\)"):
        layer(x)


def test_numba_fits_only_c_contiguous_float32_and_float64_numpy_arrays():
    """The doors' one question before a compiled loop: NumPy, float32/float64, C-contiguous."""
    import array_api_strict

    a = np.zeros((3, 4), dtype=np.float32)
    assert xb.numba_fits(a, a.astype(np.float64))
    assert not xb.numba_fits(a, a.T)  # one strided array is enough to say no
    assert not xb.numba_fits(a.astype(np.float16))
    assert not xb.numba_fits(a.astype(np.int32))
    assert not xb.numba_fits(array_api_strict.asarray(a))

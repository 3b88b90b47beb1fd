"""Array backends: resolve ``xp`` from a device string or arrays, move arrays, and the dtype policy.

Everything in ``nn``, ``optim`` and ``functional`` sees only the namespace returned here; the few
operations that need backend knowledge (device moves, random draws, fast paths) live in this module.
"""

import importlib
import weakref

import array_api_compat
import numpy as np

from .errors import BackendUnavailableError, DeviceError, DTypeError, XpnnError

FLOAT_DTYPES = ("float16", "float32", "float64")
CUDA_INSTALL_HINT = "install CuPy with: pip install 'xpnn[cuda12]' (or 'xpnn[cuda13]' for CUDA 13)"

_array_types = {}
_namespaces = {}
_device_generators = weakref.WeakKeyDictionary()


def _numpy_namespace():
    return array_api_compat.array_namespace(np.empty(0))


def _import_cupy():
    try:
        return importlib.import_module("cupy")
    except ImportError as exc:
        raise BackendUnavailableError(f"device 'cuda' needs CuPy, which is not installed; {CUDA_INSTALL_HINT}") from exc


def _cuda_namespace(index):
    cupy = _import_cupy()
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CuPy raises its own CUDARuntimeError when no driver is present
        raise BackendUnavailableError(f"device 'cuda' needs an NVIDIA GPU and driver; CuPy found none ({exc})") from exc
    if count == 0:
        raise BackendUnavailableError("device 'cuda' needs an NVIDIA GPU; CuPy found none")
    if index is not None:
        if not 0 <= index < count:
            raise BackendUnavailableError(f"device 'cuda:{index}' does not exist; found {count} GPU(s): cuda:0..cuda:{count - 1}")
        cupy.cuda.Device(index).use()
    return array_api_compat.array_namespace(cupy.empty(0))


def _strict_namespace():
    try:
        return importlib.import_module("array_api_strict")
    except ImportError as exc:
        raise BackendUnavailableError("backend 'array_api_strict' is not installed; pip install array-api-strict") from exc


def _parse_device(spec):
    name = spec.strip().lower()
    if name in ("cpu", "numpy"):
        return _numpy_namespace()
    if name in ("cuda", "cupy", "gpu"):
        return _cuda_namespace(None)
    if name.startswith("cuda:"):
        index = name[5:]
        if not index.isdigit():
            raise BackendUnavailableError(f"expected a device like 'cuda:0', got {spec!r}")
        return _cuda_namespace(int(index))
    if name in ("array_api_strict", "strict") or name.startswith("array_api_strict:"):
        return _strict_namespace()
    raise BackendUnavailableError(f"expected a device 'cpu', 'cuda', 'cuda:N' or 'array_api_strict[:NAME]', got {spec!r}")


def resolve(spec=None):
    """Return the Array API namespace for ``spec``: None/"cpu" (NumPy), "cuda"/"cuda:N" (CuPy),
    "array_api_strict", a namespace or module, or an array whose namespace is wanted. An array of
    another framework (a torch or JAX tensor) names the xpnn backend of its DLPack device: NumPy
    for a CPU tensor, CuPy on that GPU for a CUDA one."""
    if spec is None:
        return _numpy_namespace()
    if isinstance(spec, str):
        return _parse_device(spec)
    if _is_foreign_array(spec):
        return _parse_device(_dlpack_device_name(spec))
    name = getattr(spec, "__name__", None)
    if name == "numpy" or name == "array_api_compat.numpy":
        return _numpy_namespace()
    if name == "cupy" or name == "array_api_compat.cupy":
        return _cuda_namespace(None)
    if name is not None and hasattr(spec, "asarray") and hasattr(spec, "float32"):
        return spec
    if _is_strict_device(spec):
        return _strict_namespace()
    try:
        return array_api_compat.array_namespace(spec)
    except TypeError as exc:
        raise BackendUnavailableError(f"expected a device string, an array namespace or an array, got {type(spec).__name__}") from exc


def resolve_device(spec=None):
    """The device object that ``spec`` names within its namespace, for ``device=`` of the creation
    functions: an array's device, an array_api_strict device ("array_api_strict" is its default
    CPU_DEVICE, "array_api_strict:device1" another, or a ``Device``), or None for the namespace's
    default (NumPy's CPU, CuPy's current GPU)."""
    if spec is None:
        return None
    if isinstance(spec, str):
        name = spec.strip()
        if name.lower().startswith("array_api_strict:"):
            return _strict_namespace().Device(name.split(":", 1)[1])
        if name.lower() in ("array_api_strict", "strict"):
            return _strict_namespace().Device("CPU_DEVICE")
        return None
    if _is_strict_device(spec):
        return spec
    if _is_foreign_array(spec):
        return None  # resolve(spec) chose the backend (and, for CUDA, made its GPU current)
    if array_api_compat.is_array_api_obj(spec) and not isinstance(spec, np.ndarray):
        return device_of(spec)
    return None


# DLPack device types (dlpack.h's DLDeviceType): the ones xpnn has a backend for
_DLPACK_CPU, _DLPACK_CUDA, _DLPACK_CUDA_HOST = 1, 2, 3


def _is_foreign_array(x):
    """An array of a framework xpnn does not compute with (torch, JAX, ...) that speaks DLPack."""
    if isinstance(x, np.ndarray) or array_api_compat.is_cupy_array(x) or _is_strict_device(getattr(x, "device", None)):
        return False
    return hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__")


def _dlpack_device_name(x):
    """The xpnn device string ("cpu", "cuda:N") of a DLPack array's device."""
    kind, index = x.__dlpack_device__()
    if kind in (_DLPACK_CPU, _DLPACK_CUDA_HOST):
        return "cpu"
    if kind == _DLPACK_CUDA:
        return f"cuda:{int(index)}"
    raise DeviceError(f"expected an array on the CPU or a CUDA GPU, got {describe(x)} on DLPack device type {kind} (xpnn has no backend for it)")


def _detached(x):
    """A torch tensor that requires grad refuses DLPack export; its detached view shares memory."""
    requires_grad = getattr(x, "requires_grad", False)
    return x.detach() if requires_grad is True and hasattr(x, "detach") else x


def from_dlpack(obj, xp=None):
    """``obj`` (any DLPack array: a torch or JAX tensor, a NumPy, CuPy or array_api_strict array)
    as an array of ``xp`` (a device string, namespace or array; default: the backend of ``obj``'s
    own device), sharing its memory: DLPack hands over the buffer, no copy. Where the devices
    differ (a CUDA tensor for NumPy) it is a DeviceError naming both; use ``asarray`` to copy. A
    torch tensor that requires grad is detached first (same memory). Read-only or
    non-contiguous inputs keep their strides and flags."""
    obj = _detached(obj)
    xp = resolve(obj if xp is None else xp)
    try:
        return xp.from_dlpack(obj)
    except (BufferError, RuntimeError, TypeError, ValueError) as exc:
        raise DeviceError(f"from_dlpack: cannot share {describe(obj)} with {device_name(xp)} without a copy ({exc}); "
                          f"copy it with xpnn.backend.asarray(obj, xp) instead") from exc


def _is_strict_device(spec):
    return type(spec).__name__ == "Device" and type(spec).__module__.startswith("array_api_strict")


def namespace_of(*arrays):
    """The namespace shared by ``arrays``; raises DeviceError when they mix backends.
    A single array's namespace is cached by its type, since layers ask on every call."""
    if len(arrays) == 1 and type(arrays[0]) in _namespaces:
        return _namespaces[type(arrays[0])]
    try:
        xp = array_api_compat.array_namespace(*arrays)
    except TypeError as exc:
        kinds = ", ".join(describe(a) for a in arrays)
        raise DeviceError(f"expected arrays of one backend, got {kinds}") from exc
    if len(arrays) == 1:
        _namespaces[type(arrays[0])] = xp
    return xp


def is_numpy(xp):
    return array_api_compat.is_numpy_namespace(xp)


def is_cupy(xp):
    return array_api_compat.is_cupy_namespace(xp)


def is_strict(xp):
    return xp.__name__ == "array_api_strict"


def fast_path(xp):
    """Which kind of compiled kernel an operation may use on ``xp``: "numba" (NumPy),
    "cuda" (CuPy) or "portable" (any other namespace: the Array API code only). The doors in
    ``xpnn.ops`` ask this, and nothing else in the package does."""
    if is_numpy(xp):
        return "numba"
    if is_cupy(xp):
        return "cuda"
    return "portable"


def numba_fits(*arrays):
    """Whether a Numba kernel takes these arrays as they are: NumPy, float32 or float64,
    C-contiguous (the doors in ``xpnn.ops`` ask this before a compiled loop that indexes memory
    directly)."""
    return all(fast_path(namespace_of(a)) == "numba" and kernel_dtype(a) and is_c_contiguous(a) for a in arrays)


def kernel_dtype(x):
    """Whether ``x``'s dtype is one the compiled kernels are built for: float32 or float64."""
    return dtype_name(x.dtype) in ("float32", "float64")


def update_dtype(x):
    """The dtype an optimizer keeps ``x``'s state in and updates it in: float32 for float16, whose
    range holds neither Adam's default eps of 1e-8 nor the square of a small gradient; else
    ``x``'s own."""
    xp = namespace_of(x)
    return xp.float32 if x.dtype == getattr(xp, "float16", None) else x.dtype


def device_of(x):
    """The device an array lives on, to create new arrays beside it (``device=`` of the
    creation functions)."""
    return array_api_compat.device(x)


def device_name(xp):
    """A short human name for the namespace's device: 'cpu', 'cuda:0' or 'array_api_strict'."""
    if is_numpy(xp):
        return "cpu"
    if is_cupy(xp):
        import cupy

        return f"cuda:{cupy.cuda.Device().id}"
    return xp.__name__


def array_type(xp):
    """The concrete array class of a namespace, used for cheap per-call input checks."""
    key = xp.__name__
    if key not in _array_types:
        _array_types[key] = type(xp.zeros(1))
    return _array_types[key]


def describe(x):
    """'numpy.ndarray float64 (2, 3)': what an object is, for error messages."""
    shape = getattr(x, "shape", None)
    dtype = getattr(x, "dtype", None)
    kind = f"{type(x).__module__.split('.')[0]}.{type(x).__name__}"
    if shape is None:
        return kind
    return f"{kind} {dtype_name(dtype)} {tuple(shape)}"


# (type, dtype) -> name: NumPy's dtype.name costs microseconds, and every step asks it. The type
# in the key keeps dtypes of two libraries from being compared (array_api_strict warns).
_DTYPE_NAMES = {}


def dtype_name(dtype):
    """Canonical name ('float32') of a NumPy, CuPy or array_api_strict dtype, or of a string."""
    if isinstance(dtype, str):
        return np.dtype(dtype).name
    key = (type(dtype), dtype)
    try:
        return _DTYPE_NAMES[key]
    except (KeyError, TypeError):  # TypeError: an unhashable dtype-like
        pass
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype).rsplit(".", 1)[-1]
    try:
        _DTYPE_NAMES[key] = name
    except TypeError:
        pass
    return name


def resolve_dtype(dtype, xp, where="dtype"):
    """The namespace's floating dtype named by ``dtype`` (None means float32)."""
    name = "float32" if dtype is None else dtype_name(dtype)
    if name not in FLOAT_DTYPES:
        raise DTypeError(f"{where}: expected a floating dtype ({', '.join(FLOAT_DTYPES)}), got {name}")
    if not hasattr(xp, name):
        raise DTypeError(f"{where}: dtype {name} is not available on {device_name(xp)}")
    return getattr(xp, name)


def check_array(x, xp, where, dtype=None, device=None):
    """Raise a clear error unless ``x`` is an array of ``xp`` (and of ``dtype``, and on
    ``device``, when given)."""
    if type(x) is not array_type(xp):
        if not hasattr(x, "shape"):
            raise DeviceError(f"{where}: expected an array on {device_name(xp)}, got {type(x).__name__}")
        raise DeviceError(
            f"{where}: expected an array on {device_name(xp)}, got {describe(x)}; move it with xpnn.backend.asarray(x, xp) or model.to(...)"
        )
    if dtype is not None and x.dtype != dtype:
        raise DTypeError(f"{where}: expected dtype {dtype_name(dtype)}, got {dtype_name(x.dtype)}{_cast_hint(xp, x.dtype, dtype)}")
    if device is not None and device_of(x) != device:
        raise DeviceError(f"{where}: expected an array on {device}, got one on {device_of(x)}; move it with xpnn.backend.asarray(x, xp, device=...) or model.to(...)")


def _cast_hint(xp, found, expected):
    """How to fix a floating dtype mismatch: cast the array, or convert the module to the array's dtype."""
    floating = [xp.isdtype(d, "real floating") for d in (found, expected)]
    if not all(floating):
        return ""
    want, have = dtype_name(expected), dtype_name(found)
    return f"; cast the input (x.astype(np.{want}) on NumPy, xp.astype(x, xp.{want}) on any backend) or convert the model (model.to(dtype=\"{have}\"))"


def is_c_contiguous(x):
    """True when ``x`` is known to be stored C-contiguously (NumPy and CuPy report it; a namespace
    that does not say gets False). Layers use it to keep a producer's memory order, never for
    correctness."""
    flags = getattr(x, "flags", None)
    return bool(flags is not None and flags.c_contiguous)


def flat_in_memory_order(a):
    """A 1-D view of all of ``a``'s elements in memory order when ``a`` fills its memory without
    gaps in some axis order (C, batch-last, any permutation), else None. NumPy and CuPy arrays
    only (it reads strides)."""
    strides = getattr(a, "strides", None)
    if strides is None:
        return None
    order = sorted(range(a.ndim), key=lambda axis: -strides[axis])
    in_order = a.transpose(order)
    return in_order.reshape(-1) if in_order.flags.c_contiguous else None


def c_contiguous(x):
    """``x`` itself when it is C-contiguous, else a C-contiguous copy (a compiled kernel's input)."""
    if is_c_contiguous(x):
        return x
    xp = namespace_of(x)
    return xp.reshape(xp.reshape(x, (-1,), copy=True), tuple(x.shape))


def to_numpy(x):
    """A host NumPy copy (or view, for NumPy input and CPU tensors of other frameworks, through
    DLPack) of any backend's array."""
    if isinstance(x, np.ndarray):
        return x
    if array_api_compat.is_cupy_array(x):
        return x.get()
    if _is_foreign_array(x):
        x = _detached(x)
        if _dlpack_device_name(x) == "cpu":
            return np.from_dlpack(x)
        return to_numpy(from_dlpack(x))  # a GPU tensor: shared with CuPy, then copied to the host
    if _is_strict_device(getattr(x, "device", None)):
        x = x.to_device(_strict_namespace().Device("CPU_DEVICE"))  # array_api_strict converts from its CPU device only
    return np.asarray(x)


def asarray(x, xp, dtype=None, device=None):
    """``x`` (host data or any backend's array, a torch or JAX tensor included) as an array of
    ``xp`` (on ``device`` when given, else the namespace's default device for new data), copying
    across devices only: a tensor of another framework on ``xp``'s device comes through DLPack
    and shares its memory (unless ``dtype`` casts it)."""
    if type(x) is not array_type(xp) and _is_foreign_array(x) and device is None and resolve(x) is xp:
        x = from_dlpack(x, xp)
    if type(x) is not array_type(xp):
        x = xp.asarray(to_numpy(x) if hasattr(x, "shape") else np.asarray(x), device=device)
    elif device is not None and device_of(x) != device:
        x = x.to_device(device)
    if dtype is not None and x.dtype != dtype:
        x = xp.astype(x, dtype)
    return x


def synchronize(xp):
    """Wait for queued device work (a no-op on the CPU); use before reading a clock."""
    if is_cupy(xp):
        import cupy

        cupy.cuda.get_current_stream().synchronize()


def uniform(shape, xp, dtype, generator, device=None):
    """Uniform [0, 1) samples on ``xp``'s device; NumPy and array_api_strict draw from the host
    ``generator`` directly, CuPy from a device generator seeded once from it (no transfer per call)."""
    if is_cupy(xp):
        device_rng = _device_generators.get(generator)
        if device_rng is None:
            import cupy

            device_rng = cupy.random.default_rng(int(generator.integers(2**63)))
            _device_generators[generator] = device_rng
        return device_rng.random(shape, dtype=dtype_name(dtype))
    sample = generator.random(shape, dtype=np.dtype(dtype_name(dtype)) if dtype_name(dtype) != "float16" else np.float32)
    return asarray(sample, xp, dtype, device)


def same_place(a, b):
    """Whether arrays ``a`` and ``b`` have the same type and live on the same device."""
    return type(a) is type(b) and (isinstance(a, np.ndarray) or device_of(a) == device_of(b))


def available():
    """The device strings usable on this machine: always 'cpu', 'array_api_strict' when installed,
    and 'cuda:N' for each GPU CuPy can see."""
    devices = ["cpu"]
    try:
        _strict_namespace()
        devices.append("array_api_strict")
    except XpnnError:
        pass
    try:
        cupy = _import_cupy()
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception:
        count = 0
    devices.extend(f"cuda:{i}" for i in range(count))
    return devices

"""``xpnn info``: the versions of xpnn, Python and the optional packages, and the backends and
devices there are; it loads no data and no model."""

import importlib
import importlib.metadata
import platform

from .. import __version__, backend, threads


def _version(distribution):
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def info_command(args):
    print(f"xpnn {__version__}")
    print(f"python {platform.python_version()} ({platform.platform()})")
    for name in ("numpy", "array-api-compat", "array-api-strict", "tqdm", "threadpoolctl", "matplotlib"):
        print(f"{name} {_version(name) or 'not installed'}")
    print(f"cpu threads: BLAS {threads.blas_threads()}; xpnn's own {threads.get_num_threads()} "
          f"(Trainer's default: BLAS's count for a network with a convolution of 16 or more channels, else 1)")
    try:
        cupy = importlib.import_module("cupy")
        print(f"cupy {cupy.__version__}")
    except ImportError:
        print(f"cupy not installed ({backend.CUDA_INSTALL_HINT})")
        cupy = None
    devices = backend.available()
    print("devices: " + ", ".join(devices))
    for device in devices:
        if device.startswith("cuda:") and cupy is not None:
            props = cupy.cuda.runtime.getDeviceProperties(int(device[5:]))
            name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
            print(f"  {device}: {name}, {props['totalGlobalMem'] / 2**30:.1f} GiB")
    return 0

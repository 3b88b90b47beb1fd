"""Where a dataset's files live on disk: the folders searched for them, the first of which
receives downloads. One function, shared by the IDX datasets and the CIFAR archives."""

import os
from pathlib import Path

from .registry import DATASETS


def data_dirs(name, root=None):
    """The directories searched for dataset ``name``, in order; the first is where downloads go.

    The base is ``root`` if given, else ``$XPNN_DATA_DIR`` if set (files either directly in it or in
    ``<base>/<name>/``), else ``$XDG_CACHE_HOME/xpnn/<name>`` (``~/.cache/xpnn/<name>``).
    """
    base = root if root is not None else os.environ.get("XPNN_DATA_DIR")
    if not base:
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return [Path(cache) / "xpnn" / name]
    base = Path(base).expanduser()
    if base.name == name:
        return [base]
    if base.name in DATASETS:  # another dataset's folder (mnist/ when asking for fashion-mnist): same file names
        return [base / name]
    return [base / name, base]

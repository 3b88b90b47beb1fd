"""Fetch a dataset's missing files from its mirrors over plain urllib, checking each download
against its published md5 and writing it atomically, so a failed or corrupt download leaves nothing."""

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import DataError
from ..files import atomic_write

CHUNK = 1 << 16
TIMEOUT_S = 30


def mirror_variable(info):
    """The environment variable that overrides a dataset's mirrors, e.g. ``XPNN_FASHION_MNIST_MIRROR``."""
    return f"XPNN_{info.name.upper().replace('-', '_')}_MIRROR"


def mirrors(info):
    """Base URLs to try, in order: the override variable's (comma or space separated) if set, else the registry's."""
    override = os.environ.get(mirror_variable(info), "").replace(",", " ").split()
    return tuple(override) or info.mirrors


def missing_message(info, missing, directory, searched, reason=""):
    """The one message for files that are absent and cannot be downloaded: what, where, from where, or what else."""
    searched_text = ", ".join(str(d) for d in searched)
    return (
        f"{info.name}: missing {', '.join(missing)}{reason}. "
        f"Put them in {directory} (searched: {searched_text}; gzipped or not), "
        f"or point root=, --data-dir or XPNN_DATA_DIR at the folder that holds them; "
        f"get them from {' or '.join(mirrors(info)) or info.homepage}; "
        f"or use --dataset digits, which ships with xpnn and needs no download"
    )


def fetch(url, dest, md5=None, timeout=TIMEOUT_S):
    """Download ``url`` to ``dest`` with :func:`xpnn.files.atomic_write`, showing progress on stderr;
    the file appears only if the whole download arrived and its md5 matches (when ``md5`` is given).
    Network errors propagate."""
    dest = Path(dest)
    digest = hashlib.md5(usedforsecurity=False)
    with atomic_write(dest) as out, urllib.request.urlopen(url, timeout=timeout) as response:
        size = response.headers.get("Content-Length")
        with tqdm(total=int(size) if size else None, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name, file=sys.stderr) as bar:
            while chunk := response.read(CHUNK):
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        found = digest.hexdigest()
        if md5 is not None and found != md5:
            raise DataError(f"{dest.name}: checksum mismatch: expected md5 {md5}, found {found} (downloaded from {url}); the download was deleted")


def _why(exc):
    """A short reason for a failed request: 'HTTP 404 Not Found', '[Errno 111] Connection refused', 'timed out'."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    return str(getattr(exc, "reason", exc))


def download_files(info, filenames, directory, searched):
    """Download each of ``filenames`` (canonical ``.gz`` names) into ``directory`` from the first mirror
    that serves a file with the published md5; raise one DataError if any cannot be had."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for position, filename in enumerate(filenames):
        reasons, mismatch = [], None
        for base in mirrors(info):
            url = base.rstrip("/") + "/" + filename
            try:
                fetch(url, directory / filename, info.md5.get(filename))
                break
            except DataError as exc:  # a checksum mismatch: another mirror may serve the right bytes
                mismatch = mismatch or exc
            except (OSError, http.client.HTTPException) as exc:
                reasons.append(f"{url}: {_why(exc)}")
        else:
            if mismatch:
                raise mismatch
            reason = f" and could not be downloaded ({'; '.join(reasons) or 'no mirror configured'})"
            raise DataError(missing_message(info, list(filenames[position:]), directory, searched, reason))

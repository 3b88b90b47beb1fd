"""Fetch a dataset's missing files from its mirrors over plain urllib, checking each download
against its published size and md5 and writing it atomically, so a failed or corrupt download leaves
nothing. Every download is bounded: no more bytes than the registry's size for the file, no longer
than a deadline, no read that waits longer than a timeout."""

import contextlib
import hashlib
import http.client
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path


from ..errors import ConfigError, DataError, MissingDataError
from ..files import atomic_write, folder_made_for, stale_temporaries
from ..progress import progress_bar

try:
    import fcntl
except ImportError:  # Windows: an open file cannot be removed there, so no lock is needed
    fcntl = None

CHUNK = 1 << 16
TIMEOUT_S = 30  # the longest a single read may wait
DEADLINE_S = 1800  # the longest one file's download may take, however steadily a server drips
MAX_BYTES = 1 << 28  # the cap on a file the registry gives no size for (256 MiB)
URL_SCHEMES = ("http", "https")


def mirror_variable(info):
    """The environment variable that overrides a dataset's mirrors, e.g. ``XPNN_FASHION_MNIST_MIRROR``."""
    return f"XPNN_{info.name.upper().replace('-', '_')}_MIRROR"


def mirrors(info):
    """Base URLs to try, in order: the override variable's (comma or space separated) if set, else the
    registry's. An override entry that is not an http(s) URL is a ConfigError naming the variable."""
    variable = mirror_variable(info)
    value = os.environ.get(variable, "")
    override = value.replace(",", " ").split()
    for url in override:
        _check_url(url, variable, value)
    return tuple(override) or info.mirrors


def _check_url(url, variable, value):
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in URL_SCHEMES or not parts.hostname:
        raise ConfigError(
            f"{variable}: expected http:// or https:// mirror URLs separated by commas or spaces, found {url!r} in {value!r}; "
            f"for files already on disk use root=, --data-dir or XPNN_DATA_DIR instead"
        )


def missing_message(info, missing, directory, searched, reason=""):
    """The one message for files that are absent and cannot be downloaded: what, where, from where, or what else."""
    searched_text = ", ".join(str(d) for d in searched)
    forms = f"the archive or its extracted {info.records.folder} folder" if info.records else "gzipped or not"
    return (
        f"{info.name}: missing {', '.join(missing)}{reason}. "
        f"Put them in {directory} (searched: {searched_text}; {forms}), "
        f"or point root=, --data-dir or XPNN_DATA_DIR at the folder that holds them; "
        f"get them from {' or '.join(mirrors(info)) or info.homepage}"
    )


def fetch(url, dest, md5=None, timeout=TIMEOUT_S, max_bytes=MAX_BYTES, deadline_s=DEADLINE_S):
    """Download ``url`` to ``dest`` with :func:`xpnn.files.atomic_write`, showing progress on stderr;
    the file appears only if the whole download arrived and its md5 matches (when ``md5`` is given).

    A server that announces or sends more than ``max_bytes``, or takes longer than ``deadline_s`` in
    all (checked after every read, so overrun by at most one ``timeout``), is a DataError. Network
    errors propagate."""
    dest = Path(dest)
    digest = hashlib.md5(usedforsecurity=False)
    deadline = time.monotonic() + deadline_s
    with atomic_write(dest) as out, urllib.request.urlopen(url, timeout=timeout) as response:
        _lock(out)
        size = _announced_size(response, dest.name, url, max_bytes)
        with progress_bar(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=dest.name) as bar:
            received = 0
            while chunk := response.read1(CHUNK):
                received += len(chunk)
                _check_bounds(dest.name, url, received, max_bytes, deadline, deadline_s)
                out.write(chunk)
                digest.update(chunk)
                bar.update(len(chunk))
        found = digest.hexdigest()
        if md5 is not None and found != md5:
            raise DataError(f"{dest.name}: checksum mismatch: expected md5 {md5}, found {found} (downloaded from {url}); the download was deleted")


def _announced_size(response, name, url, max_bytes):
    """The Content-Length, if the server sent a usable one; more than ``max_bytes`` is refused before reading."""
    try:
        size = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    if size > max_bytes:
        raise DataError(f"{name}: expected at most {max_bytes} bytes, found Content-Length {size} (from {url}); nothing was downloaded")
    return size


def _check_bounds(name, url, received, max_bytes, deadline, deadline_s):
    """Stop a download that has outgrown its file's size or outlived its deadline."""
    if received > max_bytes:
        raise DataError(f"{name}: expected at most {max_bytes} bytes, found more (from {url}, which did not stop); the download was deleted")
    if time.monotonic() > deadline:
        raise DataError(
            f"{name}: expected the download to finish within {deadline_s:g} s, found {received} bytes after that "
            f"(from {url}, too slow or dripping); the download was deleted"
        )


def _lock(file):
    """Hold an exclusive lock on a download's temporary file while it is open, so another process's
    :func:`remove_stale_downloads` can tell a live download from a killed one's leftover."""
    if fcntl is not None:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)


def _in_use(path):
    """True when a live process holds :func:`_lock` on ``path``."""
    if fcntl is None:
        return False
    try:
        with open(path, "rb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    return False


def remove_stale_downloads(directory, filenames):
    """Remove the temporaries that killed downloads of ``filenames`` left in ``directory`` (only
    :func:`xpnn.files.atomic_write`'s own names for those files, and none a live download holds);
    says so in one line on stderr when there were any. Returns the removed paths."""
    removed = []
    for filename in filenames:
        for path in stale_temporaries(Path(directory) / filename):
            if not _in_use(path):
                with contextlib.suppress(OSError):  # gone already, or open elsewhere (Windows)
                    path.unlink()
                    removed.append(path)
    if removed:
        names = ", ".join(path.name for path in removed)
        print(f"xpnn: removed {len(removed)} stale partial download(s) from {directory}: {names}", file=sys.stderr)
    return removed


def _why(exc):
    """A short reason for a failed request: 'HTTP 404 Not Found', '[Errno 111] Connection refused', 'timed out'."""
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    return str(getattr(exc, "reason", exc))


def download_files(info, filenames, directory, searched):
    """Download each of ``filenames`` (canonical ``.gz`` names) into ``directory`` from the first mirror
    that serves a file of the published size and md5, after removing the leftovers of killed downloads
    of those files; raise one DataError if any cannot be had. The limits are the module's
    ``TIMEOUT_S``, ``DEADLINE_S`` and the registry's size for each file (else ``MAX_BYTES``)."""
    directory = Path(directory)
    urls = mirrors(info)
    with folder_made_for(directory):  # a download that fails leaves no empty folder behind
        remove_stale_downloads(directory, filenames)
        for position, filename in enumerate(filenames):
            reasons, refused = [], None
            limits = {"timeout": TIMEOUT_S, "max_bytes": info.sizes.get(filename, MAX_BYTES), "deadline_s": DEADLINE_S}
            for base in urls:
                url = base.rstrip("/") + "/" + filename
                try:
                    fetch(url, directory / filename, info.md5.get(filename), **limits)
                    break
                except DataError as exc:  # wrong bytes, too many or too slow: another mirror may do better
                    refused = refused or exc
                except (OSError, http.client.HTTPException) as exc:
                    reasons.append(f"{url}: {_why(exc)}")
            else:
                if refused:
                    raise refused
                reason = f" and could not be downloaded ({'; '.join(reasons) or 'no mirror configured'})"
                raise MissingDataError(missing_message(info, list(filenames[position:]), directory, searched, reason))

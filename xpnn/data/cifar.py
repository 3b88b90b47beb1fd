"""Read datasets shipped as an archive of fixed-size binary records: the *binary* versions of CIFAR-10
and CIFAR-100 (``cifar-10-binary.tar.gz``, ``cifar-100-binary.tar.gz``), from the archive itself or
from its extracted folder. The Python-pickle versions are refused by name: no pickle is ever loaded.

Every file is input to be checked, not trusted. A split's files must each hold exactly the registry's
number of records (``DatasetInfo.records_per_file``), checked from the file size or the tar header
before any data is read, and every label byte must be in range. The archive is read as a stream,
never extracted to disk: gzip is decompressed through a reader that refuses any single read larger
than ``MAX_READ`` and any position beyond what the expected members add up to, so a damaged or
hostile archive costs no more memory or time than the real one; only the expected member names are
accepted, only as regular files (no links, devices or sparse files), and reading stops once the
split's members are in hand.
"""

import gzip
import os
import tarfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError, MissingDataError
from .fetch import download_files, missing_message
from .folders import data_dirs
from .idx import open_regular
from .registry import EXTRA_MAX

CHUNK = 1 << 20  # bytes per read of a member's data
MAX_READ = 4 * CHUNK  # the largest single read tarfile may ask of the decompressed stream
HEADER_SLACK = 8 * 512  # tar headers of one member (a pax or long-name header, its data, the header itself)
END_SLACK = 1 << 16  # end-of-archive blocks and record padding
PICKLE_MAGIC = 0x80  # the first byte of a pickle of protocol 2 or later; no label byte can be 0x80


def load_records(info, split, root, download):
    """(images uint8 (N, C, H, W), labels int64 (N,)) of ``split`` of a record-archive dataset, from
    its extracted folder or its archive under the data directories (see ``folders.data_dirs``);
    the archive is downloaded (checksummed, atomically) when neither is found and ``download``."""
    kind, path = locate(info, split, root, download)
    return read_folder(path, info, split) if kind == "folder" else read_archive(path, info, split)


def _title(info):
    """'CIFAR-10' of 'CIFAR-10 (binary version)'."""
    return info.title.split(" (")[0]


def _folders(info, directory):
    layout = info.records
    return [directory] if directory.name == layout.folder else [directory / layout.folder]


def _complete_folder(info, split, directory):
    for folder in _folders(info, directory):
        if all((folder / name).exists() for name in info.records.files[split]):
            return folder
    return None


def _anything(info, directory):
    """Whether ``directory`` holds any form of the dataset (binary or pickle), so that downloads go beside it."""
    layout = info.records
    names = [layout.archive, *layout.pickle_version]
    return any((directory / n).exists() for n in names) or any(f.is_dir() for f in _folders(info, directory))


def locate(info, split, root, download):
    """("folder", path) or ("archive", path) of the first data directory that holds the split's files
    extracted, or else the archive; when neither is there, the archive is downloaded if allowed, into
    the directory that holds some form of the dataset, else the first one searched. A pickle version
    found where no binary one is is a DataError that says so."""

    layout = info.records
    dirs = data_dirs(info.name, root)
    for directory in dirs:
        folder = _complete_folder(info, split, directory)
        if folder is not None:
            return "folder", folder
        if (directory / layout.archive).exists():
            return "archive", directory / layout.archive
    for directory in dirs:
        for name in layout.pickle_version:
            if (directory / name).exists():
                raise DataError(
                    f"{info.name}: found {name} in {directory}, the Python (pickle) version of {_title(info)}, which xpnn never "
                    f"reads (unpickling a file can run code); put the binary version {layout.archive} (from {info.mirrors[0]}) or its "
                    f"extracted {layout.folder} folder there instead"
                )
    target = next((d for d in dirs if _anything(info, d)), dirs[0])
    if not download:
        reason = " (download=False" + _partial(info, split, dirs) + ")"
        raise MissingDataError(missing_message(info, [layout.archive], target, dirs, reason))
    download_files(info, [layout.archive], target, dirs)
    return "archive", target / layout.archive


def _partial(info, split, dirs):
    """'; cifar-10-batches-bin in D lacks data_batch_2.bin' for the first incomplete extracted folder."""
    for directory in dirs:
        for folder in _folders(info, directory):
            if folder.is_dir():
                lacking = [n for n in info.records.files[split] if not (folder / n).exists()]
                return f"; {folder.name} in {folder.parent} lacks {', '.join(lacking)}"
    return ""


# ---- the records ----------------------------------------------------------------------------------


class _Split:
    """What one split's files must be, and where their records go."""

    def __init__(self, info, split):
        self.info, self.split = info, split
        self.layout = info.records
        self.per_file = info.records_per_file(split)
        self.record = self.layout.record_size(info.image_shape)
        self.file_size = self.per_file * self.record
        self.names = self.layout.files[split]
        count = self.per_file * len(self.names)
        self.images = np.empty((count, *info.image_shape), dtype=np.uint8)
        self.labels = np.empty(count, dtype=np.int64)

    def expected(self):
        return f"{self.per_file} records of {self.record} bytes = {self.file_size} bytes"

    def parse(self, name, data):
        """Check the label bytes of file ``name``'s records (``data``, exactly ``file_size`` bytes) and
        put its images and labels in place."""
        records = np.frombuffer(data, dtype=np.uint8).reshape(self.per_file, self.record)
        for index, bound in enumerate(self.layout.labels):
            bad = np.flatnonzero(records[:, index] >= bound)
            if len(bad):
                which = f"label byte {index + 1} of {len(self.layout.labels)}" if len(self.layout.labels) > 1 else "label"
                raise DataError(
                    f"{name}: record {bad[0]} has {which} {records[bad[0], index]}; expected 0..{bound - 1} "
                    f"({len(bad)} record{'s' * (len(bad) != 1)} out of range)"
                )
        start = self.names.index(name) * self.per_file
        labels = len(self.layout.labels)
        self.images[start : start + self.per_file] = records[:, labels:].reshape(self.per_file, *self.info.image_shape)
        self.labels[start : start + self.per_file] = records[:, labels - 1]


def _read_into(stream, size, name, where):
    """Exactly ``size`` bytes of ``stream``, read in bounded chunks into one buffer, or a DataError."""
    data = bytearray(size)
    view = memoryview(data)
    done = 0
    while done < size:
        got = stream.readinto(view[done : done + CHUNK])
        if not got:
            raise DataError(f"{name}: truncated: expected {size} bytes{where}, found {done}")
        done += got
    return data


def _looks_pickled(first):
    return " (it starts like a Python pickle: is it a file of the pickle version?)" if first[:1] == bytes([PICKLE_MAGIC]) else ""


def read_folder(folder, info, split):
    """The split's records from the extracted folder: each file must be a regular file of exactly the
    expected size (checked before its data is read)."""
    split_ = _Split(info, split)
    for name in split_.names:
        path = Path(folder) / name
        with open_regular(path, what=f"{_title(info)} binary file") as f:
            size = os.fstat(f.fileno()).st_size
            if size != split_.file_size:
                problem = "truncated" if size < split_.file_size else f"{size - split_.file_size} trailing bytes"
                raise DataError(f"{name}: {problem}: expected {split_.expected()}, found {size} bytes{_looks_pickled(f.read(1))} ({path})")
            split_.parse(name, _read_into(f, size, name, ""))
    return split_.images, split_.labels


class _BoundedStream:
    """The decompressed bytes of a gzip file, as tarfile reads them: any single read larger than
    ``MAX_READ`` (a header claiming a huge pax or long-name record) and any position beyond ``limit``
    (more data than the archive can hold) is a DataError, before it is decompressed."""

    def __init__(self, raw, name, limit):
        self._gz = gzip.GzipFile(fileobj=raw, mode="rb")
        self.name, self.limit = name, limit

    def _bound(self, end):
        if end > self.limit:
            raise DataError(f"{self.name}: holds more than the {self.limit} bytes of data its members can hold; not a {self.name} as published")

    def read(self, size=-1):
        if size is None or size < 0 or size > MAX_READ:
            raise DataError(f"{self.name}: a tar header asks for a read of {size} bytes, expected at most {MAX_READ}; the archive is damaged")
        self._bound(self._gz.tell() + size)
        return self._gz.read(size)

    def seek(self, offset, whence=0):
        if whence != 0:
            raise DataError(f"{self.name}: unexpected relative seek in the archive")
        self._bound(offset)
        return self._gz.seek(offset)

    def tell(self):
        return self._gz.tell()


def _member_kind(member):
    kinds = ((member.issym, "a symbolic link"), (member.islnk, "a hard link"), (member.ischr, "a character device"),
             (member.isblk, "a block device"), (member.isfifo, "a FIFO"), (member.isdir, "a directory"), (member.issparse, "a sparse file"))
    return next((text for test, text in kinds if test()), f"of tar type {member.type!r}")


def read_archive(path, info, split):
    """The split's records from the archive at ``path``, streamed: members are checked as their headers
    pass (name, kind, size) and the split's files read as they come, then reading stops."""
    path = Path(path)
    split_ = _Split(info, split)
    layout = info.records
    sizes = {name: info.records_per_file(s) * split_.record for s in layout.files for name in layout.files[s]}
    sizes.update({name: None for name in layout.extras})
    members = {f"{layout.folder}/{name}": name for name in sizes}
    limit = sum(size or EXTRA_MAX for size in sizes.values()) + HEADER_SLACK * (len(sizes) + 1) + END_SLACK
    title = _title(info)
    found, seen = {}, set()
    with open_regular(path, what=f"{title} binary archive ({layout.archive})") as raw:
        if raw.read(2) != b"\x1f\x8b":
            raise DataError(f"{path.name}: expected a gzip-compressed tar archive ({layout.archive}), found no gzip header ({path})")
        raw.seek(0)
        try:
            with tarfile.open(fileobj=_BoundedStream(raw, path.name, limit), mode="r:") as tar:
                while len(found) < len(split_.names):
                    member = tar.next()
                    if member is None:
                        break
                    name = _checked_member(member, path.name, layout, members, sizes, seen, title)
                    if name in split_.names:
                        data = _read_into(tar.extractfile(member), sizes[name], f"{path.name}: member {member.name}", " of data")
                        split_.parse(name, data)
                        found[name] = True
        except DataError:
            raise
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path.name}: corrupt archive ({exc or type(exc).__name__}); delete it and download it again ({path})") from exc
    lacking = [name for name in split_.names if name not in found]
    if lacking:
        raise DataError(f"{path.name}: expected members {', '.join(f'{layout.folder}/{n}' for n in lacking)}, found the archive ending without them ({path})")
    return split_.images, split_.labels


def _checked_member(member, archive, layout, members, sizes, seen, title):
    """The file name of an accepted member (None for the folder's own entry), or a DataError naming it."""
    name = member.name
    if layout.pickle_version and (name == layout.pickle_version[1] or name.startswith(layout.pickle_version[1] + "/")):
        raise DataError(
            f"{archive}: holds {name}, a member of the Python (pickle) version of {title} ({layout.pickle_version[0]}), which xpnn "
            f"never reads (unpickling a file can run code); get the binary version {layout.archive} instead"
        )
    if name == layout.folder and member.isdir():
        return None
    if name not in members:
        expected = ", ".join(sorted(members))
        raise DataError(f"{archive}: unexpected member {name!r}; expected only {layout.folder}/ and its files ({expected})")
    if name in seen:
        raise DataError(f"{archive}: member {name} appears twice; expected each file once")
    seen.add(name)
    if not member.isreg() or member.issparse():
        raise DataError(f"{archive}: member {name} is {_member_kind(member)}; expected a regular file")
    file = members[name]
    size = sizes[file]
    if size is None:
        if member.size > EXTRA_MAX:
            raise DataError(f"{archive}: member {name} is {member.size} bytes; expected at most {EXTRA_MAX}")
    elif member.size != size:
        problem = "truncated" if member.size < size else f"{member.size - size} bytes too long"
        raise DataError(f"{archive}: member {name} is {problem}: expected {size} bytes, the tar header says {member.size}")
    return file


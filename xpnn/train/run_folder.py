"""The folder a training run writes into (``model.npz``, ``history.json``, ``curves.png``), guarded
so that no run is lost: a folder holding another run's checkpoint is not reused unless asked, a
file of the wrong kind where an output goes is found before training starts, so is a folder that
cannot be written, and two processes never write one folder at once (an advisory lock on the
folder, held for the run, where the platform has ``fcntl``). Temporary files that a killed run
left behind are removed by the next run in the folder, which holds the lock, so they cannot be
another live run's."""

import os
import tempfile
from pathlib import Path

from ..errors import ConfigError
from ..files import stale_temporaries

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the other guards still apply
    fcntl = None

CHECKPOINT, HISTORY, CURVES = "model.npz", "history.json", "curves.png"
MAX_SUFFIX = 10_000


class RunFolder:
    """``path`` and the names of the files a run writes there.

    Use :meth:`claim` before training: it creates the folder, checks it, takes the lock and
    removes stale temporaries; :meth:`release` (or the end of the process) frees the lock."""

    def __init__(self, path):
        self.path = Path(path)
        self.checkpoint = self.path / CHECKPOINT
        self.history = self.path / HISTORY
        self.curves = self.path / CURVES
        self._lock_fd = None

    def __repr__(self):
        return f"RunFolder({str(self.path)!r})"

    @classmethod
    def fresh(cls, base):
        """``base`` if it holds no checkpoint, else the first of ``base-2``, ``base-3``, ... that
        holds none (so a default run folder is never reused silently)."""
        base = Path(base)
        for suffix in range(1, MAX_SUFFIX):
            folder = cls(base if suffix == 1 else base.with_name(f"{base.name}-{suffix}"))
            if not folder.holds_checkpoint():
                return folder
        raise ConfigError(f"run folders {base} to {base}-{MAX_SUFFIX - 1} all hold checkpoints; pass --out to choose a folder")

    def holds_checkpoint(self):
        """Whether anything (a file, a link, a folder) is where the checkpoint goes."""
        return os.path.lexists(self.checkpoint)

    def holds_other_checkpoint(self, resumed):
        """Whether the folder's checkpoint exists and is not the file ``resumed``."""
        if not self.holds_checkpoint():
            return False
        try:
            return not os.path.samefile(self.checkpoint, resumed)
        except OSError:
            return True

    def check(self):
        """The folder, if it exists, is a folder; each output, if it exists, is a regular file."""
        if os.path.lexists(self.path) and not self.path.is_dir():
            raise ConfigError(f"run folder {self.path} exists and is not a folder; pass --out to choose another")
        for path in (self.checkpoint, self.history, self.curves):
            if os.path.lexists(path) and not path.is_file():
                what = "a folder" if path.is_dir() else "not a regular file"
                raise ConfigError(f"{path} is {what}, expected a file that this run can replace; move it away or pass another --out")

    def claim(self):
        """Create and check the folder, prove it writable, lock it and remove stale temporaries.
        Returns the temporaries removed (paths)."""
        self.check()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as exc:
            raise ConfigError(f"cannot write to run folder {self.path}: {exc.strerror or exc}") from exc
        self._lock()
        removed = []
        for target in (self.checkpoint, self.history, self.curves):
            for path in stale_temporaries(target):
                try:
                    path.unlink()
                except FileNotFoundError:
                    continue
                removed.append(path)
        return removed

    def _lock(self):
        if fcntl is None:
            return
        fd = os.open(self.path, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            raise ConfigError(f"run folder {self.path} is in use by another xpnn process; wait for it or pass another --out") from exc
        self._lock_fd = fd

    def release(self):
        """Free the lock taken by :meth:`claim`."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

"""History: per-epoch training records, a plain dict of lists that serialises to JSON as is."""

import json
import math
from pathlib import Path

from ..files import write_json

KEYS = ("loss", "acc", "val_loss", "val_acc", "epoch_time", "lr")


class History(dict):
    """``{"loss": [...], "acc": [...], "val_loss": [...], "val_acc": [...], "epoch_time": [...],
    "lr": [...]}``: one entry per epoch (Python floats). ``val_*`` stay empty without validation
    data and ``acc`` without the accuracy metric; ``epoch_time`` is the training pass in seconds
    (validation excluded) and ``lr`` the first parameter group's learning rate during the epoch."""

    def __init__(self, data=None):
        super().__init__((key, []) for key in KEYS)
        for key, values in (data or {}).items():
            self[key] = list(values)

    @property
    def epochs(self):
        """The number of epochs recorded."""
        return len(self["loss"])

    def append(self, **values):
        """Record one epoch's values (None values are skipped)."""
        for key, value in values.items():
            if value is not None:
                self.setdefault(key, []).append(value)

    def last(self):
        """The latest epoch's values, ``{"loss": ..., ...}`` (keys with no entry left out)."""
        return {key: values[-1] for key, values in self.items() if values}

    def to_dict(self):
        """A plain dict of lists, with non-finite floats as None so the JSON is standard."""
        return {key: [_finite(v) for v in values] for key, values in self.items()}

    def to_json(self):
        return json.dumps(self.to_dict(), allow_nan=False)

    def save(self, path):
        """Write the history as JSON to ``path``, atomically."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path):
        return cls(json.loads(Path(path).read_text()))

    def __repr__(self):
        epochs = f"{self.epochs} epoch{'' if self.epochs == 1 else 's'}"
        return f"History({epochs}: {', '.join(k for k, v in self.items() if v)})"


def _finite(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value

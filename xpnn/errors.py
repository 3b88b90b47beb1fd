"""Exceptions for mistakes a user can make; the CLI prints any of them on one line."""


class XpnnError(Exception):
    """Base class: a user-facing error whose message says what was expected and what was found."""


class ShapeError(XpnnError, ValueError):
    """An array has the wrong number of dimensions or the wrong size along one."""


class DTypeError(XpnnError, TypeError):
    """An array's dtype does not match the layer's or is not a supported floating dtype."""


class DeviceError(XpnnError, ValueError):
    """An array lives on another backend or device than the layer that received it."""


class BackendUnavailableError(XpnnError, RuntimeError):
    """A requested backend (CuPy, a GPU) is not installed or not present."""


class DataError(XpnnError, ValueError):
    """A data file is missing, truncated, corrupt or fails its checksum."""


class MissingDataError(DataError):
    """A dataset's files are absent and could not be downloaded."""


class CheckpointError(XpnnError, ValueError):
    """A checkpoint cannot be read or does not fit the model it is loaded into."""


class NonFiniteLossError(XpnnError, FloatingPointError):
    """Training diverged: a loss, a weight or an optimizer state became NaN or infinite."""


class ConfigError(XpnnError, ValueError):
    """An option or argument has a value outside what is accepted (an unknown name, a bad size)."""


class ArgumentTypeError(XpnnError, TypeError):
    """An argument is an object of the wrong kind (an array where a Parameter is expected)."""


class DivergenceWarning(UserWarning):
    """Training looks diverged without a NaN: the loss rose far above where it started, or the
    accuracy stayed at chance level."""


class CallOrderError(XpnnError, RuntimeError):
    """A method was called before the one whose results it needs (backward before forward)."""


class DistributedError(XpnnError, RuntimeError):
    """Ranks of a data-parallel run disagree (seeds, models, batch sizes) or a rank failed."""

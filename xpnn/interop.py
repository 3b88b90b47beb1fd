"""Weights in and out (issue 19): PyTorch state_dicts and safetensors files.

Every xpnn layer with a PyTorch twin keeps PyTorch's parameter and buffer names and layouts
(Linear (out, in), Conv1d/Conv2d (out, in/groups, k...), ConvTranspose2d (in, out/groups, kh, kw),
BatchNorm's ``running_mean``/``running_var``/``num_batches_tracked``, LayerNorm, GroupNorm,
Embedding, PReLU; Sequential and ModuleList members named ``0``, ``1``, ...), so a PyTorch
state_dict of the same architecture loads as it is: no transposes, and names map one to one.
Where the two models are built differently (xpnn's ``Residual`` adds ``residual.`` to its members'
names), ``rename`` maps PyTorch's names to xpnn's.

Nothing here unpickles code: safetensors files hold only arrays, and ``torch.save`` files are
read with ``torch.load(weights_only=True)``. safetensors is the optional extra ``xpnn[interop]``;
torch is needed only for ``torch.save`` files and torch tensors, which it then already is.
"""

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .errors import CheckpointError, ConfigError, XpnnError
from .files import atomic_write

INSTALL_HINT = "pip install 'xpnn[interop]' (or: pip install safetensors)"
_SAFETENSORS_MAX_HEADER = 100 * 2**20  # the safetensors library's own limit on the JSON header


def load_torch_state_dict(model, source, strict=True, rename=None):
    """Load PyTorch weights into ``model`` (all or nothing); returns ``model``.

    ``source`` is a state_dict (a dict of torch tensors or NumPy arrays, ``torch_model.state_dict()``),
    the path of a ``.safetensors`` file (``safetensors.torch.save_file``, or ``model.save_weights``),
    or the path of a ``torch.save`` file of a state_dict (read with ``weights_only=True``; needs
    torch). ``rename`` (a dict or a function) maps a PyTorch name to the xpnn name, for models
    built differently; a name it maps to None is dropped. With ``strict`` (default), names the
    model lacks or the source lacks are a CheckpointError listing them; a shape that differs is a
    CheckpointError naming the key and both shapes. Values are cast to the model's dtypes and
    moved to its device; bfloat16 tensors come through float32."""
    where = f"load_torch_state_dict({_describe_source(source)})"
    state = _as_numpy_state(_read(source, where), where)
    if rename is not None:
        state = _renamed(state, rename, where)
    own = dict(model.named_parameters())
    own.update(model.named_buffers())
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    problems = []
    if strict and missing:
        problems.append(f"missing keys (in the model, not in the state_dict): {_listed(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys (in the state_dict, not in the model): {_listed(unexpected)}")
    for name, value in state.items():
        if name in own and tuple(value.shape) != tuple(own[name].shape):
            problems.append(f"{name} has shape {tuple(value.shape)} in the state_dict but {tuple(own[name].shape)} in the model")
    if problems:
        raise CheckpointError(f"{where} does not fit this {type(model).__name__}: {'; '.join(problems)}")
    try:
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=strict)
    except XpnnError as exc:
        raise CheckpointError(f"{where}: {exc}") from exc
    return model


def save_weights(model, path):
    """Write ``model``'s parameters and buffers to ``path`` as a safetensors file (names as
    ``state_dict``'s, PyTorch's layouts), atomically; returns the path. Weights only: the npz
    checkpoint (``xpnn.save``, ``save_checkpoint``) stays the format a run resumes from."""
    from . import __version__

    numpy_io = _safetensors_numpy()
    state = {name: np.require(value, requirements="C") for name, value in model.state_dict().items()}  # 0-d stays 0-d
    # "format": "pt" tells PyTorch loaders (transformers, safetensors.torch) the layouts are theirs
    data = numpy_io.save(state, metadata={"format": "pt", "producer": f"xpnn {__version__}"})
    with atomic_write(path) as f:
        f.write(data)
    return Path(path)


def load_weights(model, path, strict=True):
    """Load a safetensors file (``save_weights``'s, or PyTorch's of the same architecture) into
    ``model``, all or nothing; returns ``model``. See :func:`load_torch_state_dict`."""
    if not isinstance(path, (str, Path)):
        raise ConfigError(f"load_weights: expected the path of a .safetensors file, got {type(path).__name__}")
    return load_torch_state_dict(model, _read_safetensors(Path(path), f"load_weights({str(path)!r})"), strict=strict)


# ---- reading -----------------------------------------------------------------------------------


def _describe_source(source):
    if isinstance(source, (str, Path)):
        return repr(str(source))
    return f"a {type(source).__name__}"


def _read(source, where):
    if isinstance(source, Mapping):
        return source
    if not isinstance(source, (str, Path)):
        raise ConfigError(f"{where}: expected a state_dict (a dict of tensors or arrays) or the path of a .safetensors or torch.save file, got {type(source).__name__}")
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(f"{where}: no such file")
    if _looks_like_safetensors(path):
        return _read_safetensors(path, where)
    return _read_torch(path, where)


def _looks_like_safetensors(path):
    """A safetensors file starts with its header's length (8 bytes, little-endian) and then "{";
    a torch.save file is a zip ("PK") or a pickle."""
    if path.suffix == ".safetensors":
        return True
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and int.from_bytes(head[:8], "little") <= _SAFETENSORS_MAX_HEADER and head[8:9] == b"{"


def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError as exc:
        raise ConfigError(f"reading and writing .safetensors files needs the safetensors package; {INSTALL_HINT}") from exc
    return safetensors.numpy


def _read_safetensors(path, where):
    numpy_io = _safetensors_numpy()
    try:
        return numpy_io.load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError (and TypeError for bfloat16 in NumPy)
        if "bfloat16" in str(exc) or "bf16" in str(exc).lower():
            return _read_safetensors_bfloat16(path, where, exc)
        raise CheckpointError(f"{where}: not a readable safetensors file ({type(exc).__name__}: {str(exc)[:200]})") from exc


def _read_safetensors_bfloat16(path, where, error):
    """NumPy has no bfloat16: read such a file through torch, when it is installed."""
    try:
        import safetensors.torch
    except ImportError:
        raise CheckpointError(f"{where}: the file holds bfloat16 tensors, which NumPy cannot read; install torch to convert them") from error
    return safetensors.torch.load_file(str(path))


def _read_torch(path, where):
    try:
        import torch
    except ImportError as exc:
        raise ConfigError(f"{where}: a torch.save file needs torch to read it (pip install torch), or save it as .safetensors") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle errors, refused globals (weights_only), zip errors
        raise CheckpointError(f"{where}: not a torch.save file of tensors readable with weights_only=True ({type(exc).__name__}: {str(exc)[:200]})") from exc
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{where}: expected a saved state_dict (a dict of tensors), found a {type(obj).__name__}")
    return obj


def _as_numpy_state(state, where):
    """Host NumPy arrays by name; torch tensors through DLPack/.numpy() (bfloat16 as float32)."""
    out = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise CheckpointError(f"{where}: expected string keys, found {name!r}")
        if isinstance(value, np.ndarray):
            out[name] = value
        elif type(value).__module__.startswith("torch"):
            tensor = value.detach().cpu()
            if str(tensor.dtype) == "torch.bfloat16":
                tensor = tensor.float()
            out[name] = tensor.numpy()
        elif hasattr(value, "shape") and hasattr(value, "dtype"):
            from .backend import to_numpy

            out[name] = to_numpy(value)
        else:
            raise CheckpointError(f"{where}: {name} is a {type(value).__name__}, expected a tensor or an array")
    return out


def _renamed(state, rename, where):
    out = {}
    for name, value in state.items():
        new = rename.get(name, name) if isinstance(rename, Mapping) else rename(name)
        if new is None:
            continue
        if new in out:
            raise CheckpointError(f"{where}: rename maps two keys to {new!r}")
        out[new] = value
    return out


def _listed(names, limit=6):
    shown = ", ".join(names[:limit])
    return shown + (f" (and {len(names) - limit} more)" if len(names) > limit else "")

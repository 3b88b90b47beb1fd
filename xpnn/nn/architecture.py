"""A model's architecture as data: each module's registered class name and constructor arguments.

``get_config(module)`` describes a module as JSON data, ``{"class": "Conv2d", "args": {...}}``,
from the arguments its outermost ``__init__`` was called with (``Module`` records them; a plain
``Sequential`` is described by its modules as they are now). Tuples become lists and dtypes their
names; a Module argument (and each module of a Sequential) is its own config, a registered Module
class ``{"type": "ReLU"}``; ``xp`` and ``generator`` are not saved (the loader chooses the device,
and the weights come from the checkpoint). ``from_config(config)`` builds a module again from such
data, looking each class up by name in the registry of buildable classes only: xpnn's own layers,
losses, containers and models, and the classes a user registers with ``@xpnn.nn.register``. No
code is ever pickled or imported by name from a config, which is untrusted input: its structure,
class names, argument names, kinds of value, depth, size and the parameters it would allocate are
checked before anything is built, and every problem is a ConfigError naming where it is, what was
expected and what was found.
"""

import importlib
import inspect
import math
import numbers
import re
from collections import OrderedDict

import numpy as np

from .. import backend
from ..errors import ArgumentTypeError, ConfigError, XpnnError
from .containers import ModuleDict, ModuleList
from .module import Module, Sequential

MAX_DEPTH = 32  # modules nested in modules
MAX_MODULES = 10_000  # modules in one config
MAX_ITEMS = 100_000  # values in one config (list items, dict entries, arguments)
MAX_STRING = 1_000  # characters of a string argument
MAX_INT = 2**53  # the largest integer argument (a float holds it exactly)
MAX_PARAMETERS = 2**30  # the state (parameters and buffers) a config may allocate, in elements
UNSAVED = ("xp", "generator")  # arguments that are not architecture: the device, a random generator

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_REGISTRY = {}  # name -> class
_NAMES = {}  # class -> name
_BUILTINS = ("xpnn.models",)  # modules whose import registers more of xpnn's own classes


# ---- the registry ------------------------------------------------------------------------------


def register(cls=None, *, name=None):
    """Make a Module subclass buildable from a config (a class decorator, as Keras'
    ``register_keras_serializable``): ``@xpnn.nn.register`` or ``@xpnn.nn.register(name="my.Block")``.
    The name (default: the class's ``__name__``) is what configs and checkpoints store. A name
    already taken by another class is a ConfigError; registering a class of the same module and
    qualified name again (a re-run notebook cell) replaces it."""

    def add(cls):
        if not (isinstance(cls, type) and issubclass(cls, Module)):
            raise ArgumentTypeError(f"register: expected a Module subclass, got {cls!r}")
        key = cls.__name__ if name is None else name
        if not isinstance(key, str) or len(key) > 100 or not _NAME.fullmatch(key):
            raise ConfigError(f"register: expected a name of dotted identifiers, at most 100 characters, got {key!r}")
        old = _REGISTRY.get(key)
        if old is not None and old is not cls and _qualified(old) != _qualified(cls):
            raise ConfigError(f"register: the name {key!r} is taken by {_qualified(old)}; pass name=... to register {_qualified(cls)}")
        if old is not None:
            _NAMES.pop(old, None)
        _REGISTRY[key] = cls
        _NAMES[cls] = key
        return cls

    return add if cls is None else add(cls)


def registered():
    """The buildable classes: registered name -> class (a copy)."""
    _load_builtins()
    return dict(_REGISTRY)


def _load_builtins():
    for module in _BUILTINS:
        importlib.import_module(module)


def _qualified(cls):
    return f"{cls.__module__}.{cls.__qualname__}"


# ---- describing a module ---------------------------------------------------------------------


def recorded_args(module):
    """The arguments ``module``'s outermost ``__init__`` was called with, less ``UNSAVED``."""
    recorded = module.__dict__.get("_init_args")
    if recorded is None:
        raise ConfigError(f"{type(module).__name__}: its constructor arguments were not recorded (was Module.__init__ called?)")
    return OrderedDict((k, v) for k, v in recorded[1].items() if k not in UNSAVED)


def get_config(module, where="model"):
    """``module`` as JSON data (see the module docstring); ``where`` names it in errors."""
    _load_builtins()
    return _describe(module, where, 0)


def _describe(module, where, depth):
    cls = type(module)
    name = _NAMES.get(cls)
    if name is None:
        raise ConfigError(
            f"cannot save the architecture of {where}: its class {_qualified(cls)} is not registered; decorate it with "
            f"@xpnn.nn.register (only registered classes are rebuilt from a checkpoint, never pickled code)"
        )
    if depth > MAX_DEPTH:
        raise ConfigError(f"cannot save the architecture of {where}: modules nested more than {MAX_DEPTH} deep")
    args = module._config_args()
    if not _by_children(module):
        _check_unchanged(module, where)
    label = f"{where} ({cls.__name__})"
    return {"class": name, "args": {key: _encode(value, label, key, depth) for key, value in args.items()}}


def _by_children(module):
    """True for the containers described by their members as they are now (a plain Sequential,
    ModuleList and ModuleDict, which grow by ``append`` and the like), not by constructor arguments."""
    return any(isinstance(module, cls) and type(module).__init__ is cls.__init__ for cls in (Sequential, ModuleList, ModuleDict))


def _check_unchanged(module, where):
    """A module described by its constructor's arguments must still have the modules that
    constructor left (its whole tree, so members a ModuleList got in the constructor count):
    one replaced or appended afterwards would not be rebuilt."""
    made = module.__dict__.get("_init_tree", ())[1:]  # (name, module) below the module itself
    now = tuple(module.named_modules())[1:]
    if [(n, id(m)) for n, m in made] != [(n, id(m)) for n, m in now]:
        raise ConfigError(
            f"cannot save the architecture of {where} ({type(module).__name__}): its submodules changed after it was built "
            f"(built with {[n for n, _ in made]}, now {[n for n, _ in now]}), so its constructor arguments no longer describe it; "
            f"put the changed model in an nn.Sequential of registered modules instead"
        )


def _encode(value, label, key, depth):
    """One argument value as JSON data, or a ConfigError naming the module and the argument."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic) and not isinstance(value, np.bool_) and value.dtype.kind in "iuf":
        value = value.item()
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        if math.isfinite(value):
            return float(value)
        raise ConfigError(f"cannot save the architecture of {label}: argument {key!r} is {value}, which JSON cannot hold")
    dtype = _dtype_name(value)
    if dtype is not None:
        return dtype
    if isinstance(value, Module):
        return _describe(value, f"{label}.{key}", depth + 1)
    if isinstance(value, type) and issubclass(value, Module):
        if value not in _NAMES:
            raise ConfigError(f"cannot save the architecture of {label}: argument {key!r} is the class {_qualified(value)}, which is not registered (@xpnn.nn.register)")
        return {"type": _NAMES[value]}
    if isinstance(value, (list, tuple)):
        return [_encode(item, label, f"{key}[{i}]", depth) for i, item in enumerate(value)]
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise ConfigError(f"cannot save the architecture of {label}: argument {key!r} is a dict with keys that are not strings")
        if "class" in value or list(value) == ["type"]:
            raise ConfigError(f"cannot save the architecture of {label}: argument {key!r} is a dict with keys {list(value)}, which a config reads as a module or class")
        return {k: _encode(v, label, f"{key}[{k!r}]", depth) for k, v in value.items()}
    kind = "a function" if callable(value) else f"a {type(value).__name__}"
    raise ConfigError(
        f"cannot save the architecture of {label}: argument {key!r} is {kind} ({_shown(value)}), not data; only None, bools, "
        "numbers, strings, lists, dicts, dtypes, registered Module classes and Modules can be saved"
    )


def _dtype_name(value):
    """The name of a NumPy, CuPy or array_api_strict dtype (or NumPy scalar type), else None."""
    if isinstance(value, np.dtype) or (isinstance(value, type) and issubclass(value, np.generic)):
        return np.dtype(value).name
    if type(value).__name__ == "DType" and type(value).__module__.startswith("array_api_strict"):
        return backend.dtype_name(value)
    return None


# ---- building a module -----------------------------------------------------------------------


def from_config(config, device=None, dtype=None, max_parameters=MAX_PARAMETERS, expected=None):
    """Build the module that ``config`` (from :func:`get_config`, possibly through JSON)
    describes, with fresh weights, on ``device`` (a device string, namespace or device object;
    default NumPy) and, when given, in ``dtype`` (else the dtypes saved in the config). The config
    is checked whole first (:func:`check_config`), including that its registered built-in layers
    would allocate at most ``max_parameters`` elements of state; any problem is a ConfigError."""
    _load_builtins()
    state = check_config(config, registered_only=True)
    if state > max_parameters:
        raise ConfigError(f"model: the config describes {state:,} parameter and buffer elements, expected at most {max_parameters:,}")
    model = _build(config, "model", device, dtype)
    if expected is not None and not isinstance(model, expected):
        raise ConfigError(f"model: expected a config of a {expected.__name__}, found one of a {type(model).__name__}")
    if device is not None or dtype is not None:
        model.to(device, dtype)
    return model


def _build(config, where, device, dtype):
    cls = _REGISTRY[config["class"]]
    signature = inspect.signature(cls.__init__)
    params = list(signature.parameters.values())[1:]
    positional, keywords = [], {}
    for param in params:
        if param.name == "xp" and device is not None:
            keywords["xp"] = device
        if param.name not in config["args"]:
            continue
        value = _decode(config["args"][param.name], f"{where}.{param.name}", device, dtype)
        if param.name == "dtype" and dtype is not None:
            value = dtype
        if param.kind is param.VAR_POSITIONAL:
            positional.extend(value)
        elif param.kind is param.VAR_KEYWORD:
            keywords.update(value)
        elif param.kind is param.POSITIONAL_ONLY:
            positional.append(value)
        else:
            keywords[param.name] = value
    try:
        return cls(*positional, **keywords)
    except (XpnnError, TypeError, ValueError, OverflowError, MemoryError) as exc:
        raise ConfigError(f"{where}: {config['class']} refused its config's arguments: {exc}") from exc


def _decode(value, where, device, dtype):
    if isinstance(value, dict):
        if "class" in value:
            return _build(value, where, device, dtype)
        if list(value) == ["type"]:
            return _REGISTRY[value["type"]]
        return OrderedDict((k, _decode(v, f"{where}[{k!r}]", device, dtype)) for k, v in value.items())
    if isinstance(value, list):
        return [_decode(v, f"{where}[{i}]", device, dtype) for i, v in enumerate(value)]
    return value


# ---- checking a config -----------------------------------------------------------------------


def check_config(config, registered_only=True, where="model"):
    """Check ``config`` as untrusted data without building anything: JSON types only, modules
    ``{"class": name, "args": {...}}`` nested at most ``MAX_DEPTH`` deep, at most ``MAX_MODULES``
    modules and ``MAX_ITEMS`` values, strings of at most ``MAX_STRING`` characters, integers of at
    most ``MAX_INT``; with ``registered_only``, every class registered, every argument one its
    constructor takes, every required one present and, for xpnn's own classes, each of the kind
    it must be. Returns the parameter and buffer elements that xpnn's own layers in it would
    allocate. Raises a ConfigError naming where, what was expected and what was found."""
    checker = _Checker(registered_only)
    checker.module(config, where, 0)
    return checker.state


class _Checker:
    def __init__(self, registered_only):
        self.registered_only = registered_only
        self.modules = self.items = self.state = 0

    def module(self, config, where, depth):
        _expect(isinstance(config, dict) and set(config) == {"class", "args"}, where, 'a module config {"class": <name>, "args": {...}}', config)
        if depth > MAX_DEPTH:
            raise ConfigError(f"{where}: modules nested more than {MAX_DEPTH} deep")
        self.modules += 1
        if self.modules > MAX_MODULES:
            raise ConfigError(f"{where}: more than {MAX_MODULES:,} modules in one config")
        name, args = config["class"], config["args"]
        _expect(isinstance(name, str) and len(name) <= 100 and _NAME.fullmatch(name) is not None, f"{where}['class']", "a class name", name)
        _expect(isinstance(args, dict), f"{where}['args']", "a dict of constructor arguments", args)
        cls = self.registered(name, where) if self.registered_only else None
        where = f"{where} ({name})"
        for key, value in args.items():
            self.value(value, f"{where}.{key}", depth, 0)
        if cls is not None:
            self.against_class(name, cls, args, where)

    def value(self, value, where, depth, level):
        self.items += 1
        if self.items > MAX_ITEMS:
            raise ConfigError(f"{where}: more than {MAX_ITEMS:,} values in one config")
        if level > MAX_DEPTH:
            raise ConfigError(f"{where}: lists and dicts nested more than {MAX_DEPTH} deep")
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, int):
            _expect(abs(value) <= MAX_INT, where, f"an integer of at most {MAX_INT:,}", value)
        elif isinstance(value, float):
            _expect(math.isfinite(value), where, "a finite number", value)
        elif isinstance(value, str):
            _expect(len(value) <= MAX_STRING, where, f"a string of at most {MAX_STRING:,} characters", value)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                self.value(item, f"{where}[{i}]", depth, level + 1)
        elif isinstance(value, dict) and "class" in value:
            self.module(value, where, depth + 1)
        elif isinstance(value, dict) and list(value) == ["type"]:
            name = value["type"]
            _expect(isinstance(name, str) and _NAME.fullmatch(name) is not None, f"{where}['type']", "a class name", name)
            if self.registered_only:
                self.registered(name, where)
        elif isinstance(value, dict):
            for key, item in value.items():
                _expect(isinstance(key, str), where, "a dict with string keys", key)
                self.value(item, f"{where}[{key!r}]", depth, level + 1)
        else:
            _expect(False, where, "JSON data", value)

    def registered(self, name, where):
        if name not in _REGISTRY:
            shown = ", ".join(sorted(_REGISTRY))
            raise ConfigError(f"{where}: unknown class {name!r}; expected a registered class (one of {shown}, or one registered with @xpnn.nn.register)")
        return _REGISTRY[name]

    def against_class(self, name, cls, args, where):
        params = OrderedDict(list(inspect.signature(cls.__init__).parameters.items())[1:])
        takes = [n for n in params if n not in UNSAVED]
        unknown = [k for k in args if k not in takes]
        if unknown:
            raise ConfigError(f"{where}: unknown argument(s) {unknown}; {name} takes {takes}")
        for param in params.values():
            if param.kind is param.VAR_POSITIONAL and param.name in args:
                _expect(isinstance(args[param.name], list), f"{where}.{param.name}", "a list (the *args)", args[param.name])
            elif param.kind is param.VAR_KEYWORD and param.name in args:
                _expect(isinstance(args[param.name], dict), f"{where}.{param.name}", "a dict (the **kwargs)", args[param.name])
            elif param.default is param.empty and param.kind not in (param.VAR_POSITIONAL, param.VAR_KEYWORD) and param.name not in args and param.name not in UNSAVED:
                raise ConfigError(f"{where}: missing argument {param.name!r}; {name} takes {takes}")
        if _REGISTRY.get(name) is cls and cls.__module__.startswith("xpnn."):
            for key, value in args.items():
                kind = _KINDS.get(name, {}).get(key)
                if kind is not None and not _KIND_CHECKS[kind][0](value):
                    raise ConfigError(f"{where}.{key}: expected {_KIND_CHECKS[kind][1]}, found {_shown(value)}")
            count = _STATE.get(name)
            if count is not None:
                self.state += count(args)


# What each argument of xpnn's own classes must be (user classes check their own arguments).
def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_pair(v):
    return _is_int(v) or (isinstance(v, list) and len(v) == 2 and all(_is_int(i) for i in v))


_KIND_CHECKS = {
    "int": (_is_int, "an int"),
    "number": (_is_number, "a number"),
    "number?": (lambda v: v is None or _is_number(v), "a number or null"),
    "bool": (lambda v: isinstance(v, bool), "a bool"),
    "str": (lambda v: isinstance(v, str), "a string"),
    "dtype": (lambda v: v is None or isinstance(v, str), "a dtype name or null"),
    "pair": (_is_pair, "an int or a pair of ints"),
    "pair?": (lambda v: v is None or _is_pair(v), "an int, a pair of ints or null"),
    "size": (lambda v: v is None or _is_int(v) or (isinstance(v, list) and len(v) == 2 and all(i is None or _is_int(i) for i in v)), "an int, null or a pair of them"),
    "ints": (lambda v: isinstance(v, list) and all(_is_int(i) for i in v), "a list of ints"),
    "activation": (lambda v: isinstance(v, str) or (isinstance(v, dict) and list(v) == ["type"]), 'an activation name or {"type": <class>}'),
}
_WEIGHTS = {"bias": "bool", "init": "str", "dtype": "dtype"}
_BATCHNORM = {"num_features": "int", "eps": "number", "momentum": "number?", "affine": "bool", "track_running_stats": "bool", "dtype": "dtype"}
_IMAGES = {"in_channels": "int", "image_size": "pair", "num_classes": "int", "dtype": "dtype"}
_KINDS = {
    "LeakyReLU": {"negative_slope": "number"},
    "GELU": {"approximate": "str"},
    "Softmax": {"dim": "int"},
    "LogSoftmax": {"dim": "int"},
    "BatchNorm1d": _BATCHNORM,
    "BatchNorm2d": _BATCHNORM,
    "Conv2d": {"in_channels": "int", "out_channels": "int", "kernel_size": "pair", "stride": "pair", "padding": "pair",
               "dilation": "pair", "groups": "int", **_WEIGHTS},
    "Dropout": {"p": "number"},
    "Dropout2d": {"p": "number"},
    "Flatten": {"start_dim": "int", "end_dim": "int"},
    "Linear": {"in_features": "int", "out_features": "int", **_WEIGHTS},
    "CrossEntropyLoss": {"reduction": "str", "label_smoothing": "number"},
    "NLLLoss": {"reduction": "str"},
    "MSELoss": {"reduction": "str"},
    "BCEWithLogitsLoss": {"reduction": "str"},
    "BCELoss": {"reduction": "str"},
    "MaxPool2d": {"kernel_size": "pair", "stride": "pair?", "padding": "pair", "dilation": "pair"},
    "AvgPool2d": {"kernel_size": "pair", "stride": "pair?", "padding": "pair", "count_include_pad": "bool"},
    "AdaptiveAvgPool2d": {"output_size": "size"},
    "Sequential": {"modules": "list"},
    "ModuleList": {"modules": "list?"},
    "ModuleDict": {"modules": "members?"},
    "Residual": {"body": "module", "shortcut": "module?"},
    "Parallel": {"merge": "str", "dim": "int"},
    "MLP": {"sizes": "ints", "activation": "activation", "dropout": "number", "init": "str", "dtype": "dtype"},
    "SimpleCNN": _IMAGES,
    "LeNet": _IMAGES,
    "LayerNorm": {"normalized_shape": "shape", "eps": "number", "elementwise_affine": "bool", "bias": "bool", "dtype": "dtype"},
    "GroupNorm": {"num_groups": "int", "num_channels": "int", "eps": "number", "affine": "bool", "dtype": "dtype"},
    "Embedding": {"num_embeddings": "int", "embedding_dim": "int", "padding_idx": "int?", "max_norm": "number?", "norm_type": "number",
                  "scale_grad_by_freq": "bool", "sparse": "bool", "dtype": "dtype"},
    "Upsample": {"size": "pair?", "scale_factor": "scale?", "mode": "str", "align_corners": "bool?", "recompute_scale_factor": "bool?"},
}
_ONE = "one"  # Conv1d's and the 1-D pools' sizes: an int or a 1-list
_KINDS |= {
    "Identity": {}, "ReLU": {}, "Sigmoid": {}, "Tanh": {}, "SiLU": {}, "Hardswish": {}, "Mish": {}, "Softsign": {}, "ReLU6": {},
    "ELU": {"alpha": "number"},
    "Softplus": {"beta": "number", "threshold": "number"},
    "Hardtanh": {"min_val": "number", "max_val": "number"},
    "PReLU": {"num_parameters": "int", "init": "number", "dtype": "dtype"},
    "L1Loss": {"reduction": "str"},
    "SmoothL1Loss": {"reduction": "str", "beta": "number"},
    "HuberLoss": {"reduction": "str", "delta": "number"},
    "KLDivLoss": {"reduction": "str", "log_target": "bool"},
    "Conv1d": {"in_channels": "int", "out_channels": "int", "kernel_size": _ONE, "stride": _ONE, "padding": _ONE, "dilation": _ONE,
               "groups": "int", **_WEIGHTS},
    "ConvTranspose2d": {"in_channels": "int", "out_channels": "int", "kernel_size": "pair", "stride": "pair", "padding": "pair",
                        "output_padding": "pair", "groups": "int", "dilation": "pair", **_WEIGHTS},
    "MaxPool1d": {"kernel_size": _ONE, "stride": _ONE + "?", "padding": _ONE, "dilation": _ONE},
    "AvgPool1d": {"kernel_size": _ONE, "stride": _ONE + "?", "padding": _ONE, "count_include_pad": "bool"},
}
_KINDS |= {  # xpnn.models' ResNet (issue 17)
    "ZeroPadShortcut": {"in_channels": "int", "out_channels": "int", "stride": "int"},
    "ResNet": {"blocks": "int", "in_channels": "int", "num_classes": "int", "widths": "ints", "dtype": "dtype"},
}
_KIND_CHECKS[_ONE] = (lambda v: _is_int(v) or (isinstance(v, list) and len(v) == 1 and _is_int(v[0])), "an int or a list of one int")
_KIND_CHECKS[_ONE + "?"] = (lambda v: v is None or _KIND_CHECKS[_ONE][0](v), "an int, a list of one int or null")
_KIND_CHECKS["shape"] = (lambda v: _is_int(v) or (isinstance(v, list) and all(_is_int(i) for i in v)), "an int or a list of ints")
_KIND_CHECKS["int?"] = (lambda v: v is None or _is_int(v), "an int or null")
_KIND_CHECKS["bool?"] = (lambda v: v is None or isinstance(v, bool), "a bool or null")
_KIND_CHECKS["scale?"] = (lambda v: v is None or _is_number(v) or (isinstance(v, list) and len(v) == 2 and all(_is_number(i) for i in v)),
                          "a number, a pair of numbers or null")
_KIND_CHECKS["list"] = (lambda v: isinstance(v, list), "a list")
_KIND_CHECKS["list?"] = (lambda v: v is None or isinstance(v, list), "a list or null")
_KIND_CHECKS["members?"] = (lambda v: v is None or isinstance(v, list) or (isinstance(v, dict) and "class" not in v),
                            "a dict of name -> module config, a list of [name, module config] pairs, or null")
_KIND_CHECKS["module"] = (lambda v: isinstance(v, dict) and "class" in v, 'a module config {"class": <name>, "args": {...}}')
_KIND_CHECKS["module?"] = (lambda v: v is None or _KIND_CHECKS["module"][0](v), 'a module config {"class": <name>, "args": {...}} or null')


# The state elements (parameters and buffers) xpnn's own parameter layers and models allocate,
# from arguments already of their kinds: checked against a budget before anything is built.
def _pair(v):
    return (v, v) if _is_int(v) else tuple(v)


def _positive(*values):
    return all(v >= 0 for v in values)


def _linear(args):
    i, o = args["in_features"], args["out_features"]
    return i * o + (o if args.get("bias", True) else 0) if _positive(i, o) else 0


def _conv(args, transposed=False):
    """Conv2d's weight (out, in / groups, kh, kw), or ConvTranspose2d's (in, out / groups, kh,
    kw), PyTorch's layouts; a bias of ``out``."""
    i, o, g = args["in_channels"], args["out_channels"], args.get("groups", 1)
    kh, kw = _pair(args["kernel_size"])
    if not _positive(i, o, kh, kw) or g < 1:
        return 0
    rows, per_group = (i, o) if transposed else (o, i)
    return rows * (per_group // g) * kh * kw + (o if args.get("bias", True) else 0)


def _batchnorm(args):
    n = max(args["num_features"], 0)
    return (2 * n if args.get("affine", True) else 0) + (2 * n + 1 if args.get("track_running_stats", True) else 0)


def _mlp(args):
    sizes = [max(s, 0) for s in args["sizes"]]
    return sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))


def _image(args):
    c = max(args.get("in_channels", 1), 0)
    h, w = (max(s, 0) for s in _pair(args.get("image_size", [28, 28])))
    return c, h, w, max(args.get("num_classes", 10), 0)


def _simple_cnn(args):
    c, h, w, k = _image(args)
    return 8 * c * 9 + 8 + 8 * h * w * 128 + 128 + 128 * k + k


def _lenet(args):
    c, h, w, k = _image(args)
    h, w = h // 2, w // 2
    h, w = ((s + 2 * max(0, -(-(6 - s) // 2)) - 4) // 2 for s in (h, w))
    return 6 * c * 25 + 6 + 16 * 6 * 25 + 16 + 16 * max(h, 0) * max(w, 0) * 120 + 120 + 120 * k + k


def _layer_norm(args):
    shape = args["normalized_shape"]
    n = math.prod(max(d, 0) for d in ([shape] if _is_int(shape) else shape))
    return n * (args.get("bias", True) + 1) if args.get("elementwise_affine", True) else 0


def _group_norm(args):
    return 2 * max(args["num_channels"], 0) if args.get("affine", True) else 0


def _embedding(args):
    return max(args["num_embeddings"], 0) * max(args["embedding_dim"], 0)


def _conv1d(args):
    k = args["kernel_size"]
    return _conv(dict(args, kernel_size=[1, k if _is_int(k) else k[0]]))


def _conv_transpose(args):
    return _conv(args, transposed=True)


def _prelu(args):
    return max(args["num_parameters"], 0)


def _resnet(args):
    """The stem, ``blocks`` basic blocks per stage (two bias-free 3x3 convolutions and two
    BatchNorms, whose state is 4 x channels + 1), and the Linear layer; the shortcuts have none."""
    n = max(args.get("blocks", 3), 0)
    widths = [max(w, 0) for w in args.get("widths", [16, 32, 64])]
    c, k = max(args.get("in_channels", 3), 0), max(args.get("num_classes", 10), 0)
    if not widths:
        return 0
    total = 9 * c * widths[0] + 4 * widths[0] + 1
    c_in = widths[0]
    for w in widths:
        total += 9 * c_in * w + 9 * w * w + 2 * (4 * w + 1) if n else 0
        total += (n - 1) * (2 * 9 * w * w + 2 * (4 * w + 1)) if n > 1 else 0
        c_in = w
    return total + c_in * k + k


_STATE = {"LayerNorm": _layer_norm, "GroupNorm": _group_norm, "Embedding": _embedding}
_STATE["ResNet"] = _resnet
_STATE |= {"Conv1d": _conv1d, "ConvTranspose2d": _conv_transpose, "PReLU": _prelu}
_STATE |= {"Linear": _linear, "Conv2d": _conv, "BatchNorm1d": _batchnorm, "BatchNorm2d": _batchnorm, "MLP": _mlp, "SimpleCNN": _simple_cnn, "LeNet": _lenet}


def _expect(ok, where, expected, found):
    if not ok:
        raise ConfigError(f"{where}: expected {expected}, found {_shown(found)}")


def _shown(value, limit=80):
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."

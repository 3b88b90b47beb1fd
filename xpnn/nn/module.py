"""Module: the base of every layer and model (registration, state, device moves) and Sequential."""

import functools
import inspect
from collections import OrderedDict

import numpy as np

from .. import backend
from ..errors import ArgumentTypeError, CallOrderError, CheckpointError, ShapeError
from . import grad_mode
from .parameter import Parameter

# The recorded output shape of a module whose forward returned something without a shape (a tuple,
# a number): its backward passes are not shape-checked.
_ANY_SHAPE = object()


class Module:
    """Base class of every layer and model.

    ``forward`` computes the outputs and caches what ``backward`` needs; ``backward`` takes the
    gradient of the outputs, accumulates parameter gradients into ``Parameter.grad`` and returns
    the gradient of the inputs (there is no autograd). Parameters and submodules assigned as
    attributes, and arrays given to ``register_buffer``, are registered, so ``parameters()``,
    ``state_dict()``, ``to()`` and ``train()``/``eval()`` reach them, as in PyTorch.

    Every subclass's own ``forward`` records the shape of what it returns, and its ``backward``
    and ``backward_params`` first check that forward has run and that the gradient has that
    shape (``__init_subclass__``): a clear error naming the module, for every layer and loss,
    at the cost of a tuple comparison (no device sync). A loss's ``backward()`` without a
    gradient checks only the order.

    Args:
        xp: the device or namespace the module's parameters live on (default: NumPy).
    """

    def __init__(self, xp=None):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "xp", backend.resolve(xp))
        object.__setattr__(self, "device", backend.resolve_device(xp))
        object.__setattr__(self, "_output_shape", None)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "__init__" in own:
            cls.__init__ = _capturing(own["__init__"])
        if "forward" in own:
            cls.forward = _recording(own["forward"])
        for name in ("backward", "backward_params"):
            if name in own:
                setattr(cls, name, _checking(own[name], name))

    # ---- architecture as data (see nn/architecture.py) -------------------------------------

    def get_config(self):
        """This module's architecture as JSON data: ``{"class": <registered name>, "args":
        {<constructor argument>: <value>}}``, a submodule argument (and a Sequential's modules)
        as its own config. The arguments are those the module was built with (tuples as lists,
        dtypes as names; ``xp`` and ``generator`` are not saved). Raises a ConfigError naming the
        module and argument when a class is not registered (``nn.register``) or an argument is
        not data (a function, an array)."""
        from .architecture import get_config

        return get_config(self)

    @classmethod
    def from_config(cls, config, device=None, dtype=None):
        """Build a module of this class from ``get_config()``'s data (``nn.from_config``), on
        ``device``, with fresh weights."""
        from .architecture import from_config

        return from_config(config, device=device, dtype=dtype, expected=cls)

    def _config_args(self):
        """The constructor arguments that describe this module (default: those of the outermost
        ``__init__`` call, recorded by ``_capturing``)."""
        from .architecture import recorded_args

        return recorded_args(self)

    def _check_grad(self, grad):
        """Raise unless forward has run and ``grad`` (None: a loss's implicit 1) has the shape
        of its output."""
        expected = self._output_shape
        if expected is None:
            raise CallOrderError(f"{self._name()}: backward called before forward; call the module on an input first")
        if self.__dict__.get("_cache_dropped"):
            raise CallOrderError(
                f"{self._name()}: backward needs the cache of a forward run with gradients enabled; "
                f"the last forward ran under xpnn.no_grad() and kept none (run it again outside no_grad first)"
            )
        if grad is None or expected is _ANY_SHAPE:
            return
        found = getattr(grad, "shape", ())
        if tuple(found) != expected:
            raise ShapeError(f"{self._name()}: expected a gradient of shape {expected} like the last forward's output, got {tuple(found)}")

    def _name(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def __setattr__(self, name, value):
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self._modules[name] = value
        elif name in self._buffers:
            self._buffers[name] = value
        else:
            self._parameters.pop(name, None)
            self._modules.pop(name, None)
        object.__setattr__(self, name, value)

    def register_buffer(self, name, array):
        """Keep ``array`` as state that is saved and moved with the module but not trained."""
        self._buffers[name] = array
        object.__setattr__(self, name, array)

    def forward(self, *args):
        raise NotImplementedError(f"{type(self).__name__} does not define forward")

    def backward(self, grad):
        raise NotImplementedError(f"{type(self).__name__} does not define backward")

    def backward_params(self, grad):
        """Accumulate parameter gradients only, for a module whose input is data rather than
        another layer's output: layers that can skip the input-gradient GEMM override this."""
        self.backward(grad)

    def __call__(self, *args):
        return self.forward(*args)

    # ---- traversal -------------------------------------------------------------------------

    def named_children(self):
        return iter(self._modules.items())

    def children(self):
        return iter(self._modules.values())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix=""):
        seen = set()
        for module_name, module in self.named_modules(prefix):
            for name, param in module._parameters.items():
                if id(param) not in seen:
                    seen.add(id(param))
                    yield (f"{module_name}.{name}" if module_name else name), param

    def parameters(self):
        for _, param in self.named_parameters():
            yield param

    def named_buffers(self, prefix=""):
        for module_name, module in self.named_modules(prefix):
            for name, buf in module._buffers.items():
                yield (f"{module_name}.{name}" if module_name else name), buf

    def buffers(self):
        for _, buf in self.named_buffers():
            yield buf

    def num_parameters(self):
        """Total number of trainable scalars."""
        return sum(p.size for p in self.parameters())

    # ---- state -----------------------------------------------------------------------------

    def zero_grad(self):
        for param in self.parameters():
            param.zero_grad()

    def train(self, mode=True):
        """Switch training behaviour (Dropout, BatchNorm) on or off for every submodule."""
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def to(self, device=None, dtype=None):
        """Move every parameter, gradient and buffer to ``device`` (a device string such as "cpu",
        "cuda:1" or "array_api_strict:device1", a namespace, or a device object) and/or cast
        floating ones to ``dtype``; returns self."""
        xp = self.xp if device is None else backend.resolve(device)
        place = self.device if device is None else backend.resolve_device(device)
        target = None if dtype is None else backend.resolve_dtype(dtype, xp, where=f"{type(self).__name__}.to")
        for module in self.modules():
            object.__setattr__(module, "xp", xp)
            object.__setattr__(module, "device", place)
            for param in module._parameters.values():
                param.data = backend.asarray(param.data, xp, target, place)
                param.grad = backend.asarray(param.grad, xp, target, place)
            for name, buf in list(module._buffers.items()):
                cast = target if target is not None and _is_floating(buf) else None
                setattr(module, name, backend.asarray(buf, xp, cast, place))
        return self

    def state_dict(self):
        """Host NumPy copies of every parameter and buffer, keyed like ``"0.weight"``."""
        state = OrderedDict()
        for name, param in self.named_parameters():
            state[name] = np.array(backend.to_numpy(param.data), copy=True)
        for name, buf in self.named_buffers():
            state[name] = np.array(backend.to_numpy(buf), copy=True)
        return state

    def load_state_dict(self, state_dict, strict=True):
        """Copy arrays (from any device) into the parameters and buffers, all or nothing: every
        name, shape and dtype is checked (``check_state_dict``) and every array converted before
        the first one is assigned, so a state that does not fit raises and changes nothing."""
        values = self._converted_state(state_dict, strict)
        params = dict(self.named_parameters())
        for name, value in values.items():
            if name in params:
                params[name].data = value
            else:
                module_name, _, attr = name.rpartition(".")
                setattr(self._submodule(module_name), attr, value)

    def save_weights(self, path):
        """Write the parameters and buffers to ``path`` as a safetensors file (``state_dict``'s
        names, PyTorch's layouts), atomically: weights only, for sharing and for PyTorch; the npz
        checkpoint (``xpnn.save``) stays the format a run resumes from. Needs ``xpnn[interop]``."""
        from ..interop import save_weights

        return save_weights(self, path)

    def load_weights(self, path, strict=True):
        """Load a safetensors file (``save_weights``'s, or PyTorch's for the same architecture),
        all or nothing; returns self. See ``xpnn.load_torch_state_dict``."""
        from ..interop import load_weights

        return load_weights(self, path, strict=strict)

    def check_state_dict(self, state_dict, strict=True):
        """Raise a CheckpointError unless ``load_state_dict(state_dict, strict)`` would succeed:
        for checking several objects' states before loading any of them."""
        for name, target in self._state_targets(state_dict, strict):
            _check_entry(type(self).__name__, name, target, state_dict[name])

    def _state_targets(self, state_dict, strict):
        """(name, current array) of each state entry that ``state_dict`` sets; raises when, with
        ``strict``, a name is missing or unexpected."""
        if not hasattr(state_dict, "keys"):
            raise CheckpointError(f"{type(self).__name__}.load_state_dict: expected a dict of arrays, got {type(state_dict).__name__}")
        own = OrderedDict((name, param.data) for name, param in self.named_parameters())
        own.update(self.named_buffers())
        missing = [k for k in own if k not in state_dict]
        unexpected = [k for k in state_dict if k not in own]
        if strict and (missing or unexpected):
            raise CheckpointError(
                f"{type(self).__name__}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        return [(name, array) for name, array in own.items() if name in state_dict]

    def _converted_state(self, state_dict, strict):
        """The entries of ``state_dict`` checked and converted to this module's arrays."""
        self.check_state_dict(state_dict, strict)
        return OrderedDict(
            (name, backend.asarray(state_dict[name], self.xp, target.dtype, self.device))
            for name, target in self._state_targets(state_dict, strict)
        )

    def _submodule(self, dotted):
        module = self
        for part in filter(None, dotted.split(".")):
            module = module._modules[part]
        return module

    # ---- printing --------------------------------------------------------------------------

    def extra_repr(self):
        return ""

    def __repr__(self):
        head = f"{type(self).__name__}({self.extra_repr()})"
        if not self._modules:
            return head
        lines = [f"{type(self).__name__}("]
        for name, child in self._modules.items():
            child_lines = repr(child).splitlines()
            count = child.num_parameters()
            suffix = f"  # {count:,} params" if count and not child._modules else ""
            lines.append(f"  ({name}): {child_lines[0]}{suffix}")
            lines.extend("  " + line for line in child_lines[1:])
        lines.append(f")  # {self.num_parameters():,} params in total")
        return "\n".join(lines)

    def summary(self, input_shape, batch_size=None, dtype=None):
        """The table of every module in call order with its output shape and parameter count,
        and the totals, as Keras's ``model.summary()`` and torchinfo show them; see
        ``xpnn.nn.summary``, which this calls. Print it, or show it in a notebook cell."""
        from .summary import summary

        return summary(self, input_shape, batch_size=batch_size, dtype=dtype)


def _is_floating(array):
    return backend.dtype_name(array.dtype) in backend.FLOAT_DTYPES


def _check_entry(owner, name, target, value):
    """Raise a CheckpointError unless ``value`` can replace the state array ``target``: an array of
    its shape, floating for a floating target (float64 weights load into float32, but an int,
    bool, complex or string array is never cast into one), integer for an integer buffer."""
    where = f"{owner}.load_state_dict: {name}"
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        raise CheckpointError(f"{where} expected an array, got {type(value).__name__}")
    found = tuple(value.shape)
    if found != tuple(target.shape):
        raise CheckpointError(f"{where} expected shape {tuple(target.shape)}, got {found}")
    kind = backend.dtype_name(value.dtype)
    if _is_floating(target):
        ok, wanted = kind in backend.FLOAT_DTYPES, "a floating dtype"
    else:
        ok, wanted = kind.startswith(("int", "uint")), "an integer dtype"
    if not ok:
        raise CheckpointError(f"{where} expected {wanted} like the module's {backend.dtype_name(target.dtype)}, got {kind}")


# While ``nn.summary`` traces a model: called with (module, args) as each module's forward starts,
# it returns the function to call with the output when that forward returns. None otherwise.
_tracer = None


def _capturing(init):
    """``init`` that, when it is the outermost ``__init__`` of the object being built (not one
    reached through ``super().__init__``), records its bound arguments, defaults included, and
    the submodules it made: what ``get_config`` describes the module by."""
    signature = inspect.signature(init)
    first = next(iter(signature.parameters))

    @functools.wraps(init)
    def captured(self, *args, **kwargs):
        outermost = "_init_args" not in self.__dict__
        if outermost:
            object.__setattr__(self, "_init_args", None)
        init(self, *args, **kwargs)
        if outermost:
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            arguments = OrderedDict((k, v) for k, v in bound.arguments.items() if k != first)
            object.__setattr__(self, "_init_args", (signature, arguments))
            object.__setattr__(self, "_init_children", tuple(self._modules.items()))
            # the whole tree as the constructor left it (members a ModuleList got in it included)
            object.__setattr__(self, "_init_tree", tuple(self.named_modules()))

    return captured


Module.__init__ = _capturing(Module.__init__)


def _recording(forward):
    """``forward`` that also records the shape of its output (for ``Module._check_grad``) and,
    with gradients disabled (``nn.no_grad``), drops the backward cache named by the class's
    ``_cache`` attribute names as it returns: the outermost call only, so a subclass's forward
    can still read what its parent's forward, called through ``super()``, cached."""
    @functools.wraps(forward)
    def recorded(self, *args, **kwargs):
        if getattr(type(self), "forward") is not recorded:  # called through super(): record only
            return _record_shape(self, forward(self, *args, **kwargs))
        keep = grad_mode.is_grad_enabled()
        done = None if _tracer is None else _tracer(self, args)
        try:
            out = forward(self, *args, **kwargs)
        finally:
            if not keep:
                for name in getattr(self, "_cache", ()):
                    object.__setattr__(self, name, None)
            object.__setattr__(self, "_cache_dropped", not keep)
        if done is not None:
            done(out)
        return _record_shape(self, out)

    return recorded


def _record_shape(module, out):
    shape = getattr(out, "shape", None)
    object.__setattr__(module, "_output_shape", _ANY_SHAPE if shape is None else tuple(shape))
    return out


def _checking(method, name):
    """``method`` (a backward pass) that first checks its gradient with ``Module._check_grad``,
    unless a subclass's override called it through ``super()`` and has checked already."""
    @functools.wraps(method)
    def checked(self, *args, **kwargs):
        if getattr(type(self), name) is checked:
            self._check_grad(args[0] if args else kwargs.get("grad"))
        return method(self, *args, **kwargs)

    return checked


def _fuses_relu(module, follower):
    """Whether ``module`` may apply ``follower`` itself: the follower is exactly an ``nn.ReLU``
    (a subclass may compute otherwise) and the class that defines the module's ``forward`` says
    ``_fuses_relu`` (a user's subclass with a forward of its own, which may change the output
    after the fused pass, is left apart)."""
    if "_adopt_rectified" not in type(follower).__dict__:
        return False
    owner = next(c for c in type(module).__mro__ if "forward" in c.__dict__)
    return bool(owner.__dict__.get("_fuses_relu", False))


def _forward_fusing_relu(module, relu, x):
    """``module(x)`` for a module followed by an ``nn.ReLU`` that can apply it in its own last
    pass (Conv2d on NumPy's Winograd and direct paths, the batch norms' compiled pass with batch
    statistics): asked to, it returns its output rectified and leaves the mask of the kept
    values, which the ReLU then adopts, so its forward passes the output on and its backward
    applies the mask. Both modules are still called, in order; a module that cannot fuse this
    input leaves no mask and the ReLU computes as usual. Equal values to the two layers apart
    (a negative zero comes out as +0, as from the compiled ReLU)."""
    object.__setattr__(module, "_relu_mask", None)
    object.__setattr__(module, "_relu_follows", True)
    try:
        y = module(x)
    finally:
        object.__setattr__(module, "_relu_follows", False)
    mask = module.__dict__.get("_relu_mask")
    if mask is not None:
        object.__setattr__(module, "_relu_mask", None)
        relu._adopt_rectified(mask)
    return y


class Sequential(Module):
    """Applies modules in order; backward runs them in reverse.

    The modules are named "0", "1", ... or by the keys of one ``OrderedDict`` argument. The
    container takes its namespace from the first module. Indexing returns a module, a slice a
    new Sequential of the same module objects; ``append`` adds one at the end.

    A Conv2d or batch norm followed by an ``nn.ReLU`` applies the ReLU in its own last pass where
    its compiled path can (on NumPy), with the same values as the two layers apart and both still
    called; ``Sequential.fuse_relu = False`` runs every layer apart (``docs/design.md``).

    Args:
        *modules: the Module instances, in order, or one ``OrderedDict`` of name -> Module. An
            argument that is not a Module raises an ``ArgumentTypeError`` (a TypeError).

    Shape:
        - Input: what the first module accepts.
        - Output: what the last module returns.
    """

    fuse_relu = True

    def __init__(self, *modules):
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items = modules[0].items()
        else:
            items = ((str(i), m) for i, m in enumerate(modules))
        for name, module in items:
            if not isinstance(module, Module):
                raise ArgumentTypeError(f"Sequential: expected Module instances, got {type(module).__name__} at position {name}")
            setattr(self, name, module)
        if self._modules:
            first = next(iter(self._modules.values()))
            object.__setattr__(self, "xp", first.xp)
            object.__setattr__(self, "device", first.device)

    def _config_args(self):
        """A plain Sequential is described by its modules as they are now (after ``append``); a
        subclass with its own ``__init__`` (the models) by its constructor's arguments."""
        if type(self).__init__ is not Sequential.__init__:
            return super()._config_args()
        names = list(self._modules)
        if names == [str(i) for i in range(len(names))]:
            return OrderedDict(modules=list(self._modules.values()))
        return OrderedDict(modules=[OrderedDict(self._modules)])

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())

    def __getitem__(self, index):
        layers = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*layers[index])
        return layers[index]

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def forward(self, x):
        modules = list(self._modules.values())
        for k, module in enumerate(modules):
            follower = modules[k + 1] if k + 1 < len(modules) else None
            if self.fuse_relu and _fuses_relu(module, follower):
                x = _forward_fusing_relu(module, follower, x)
            else:
                x = module(x)
        return x

    def backward(self, grad):
        for module in reversed(self._modules.values()):
            grad = module.backward(grad)
        return grad

    def backward_params(self, grad):
        """Backward without the input gradient: layers before the first one with parameters are
        skipped, and that one computes only its parameter gradients."""
        modules = list(self._modules.values())
        first = next((i for i, m in enumerate(modules) if next(m.parameters(), None) is not None), len(modules))
        for module in reversed(modules[first + 1:]):
            grad = module.backward(grad)
        if first < len(modules):
            modules[first].backward_params(grad)

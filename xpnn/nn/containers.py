"""Containers beyond Sequential: Residual and Parallel (branches whose gradients are routed by
hand, there being no autograd), and ModuleList and ModuleDict (members registered, no forward).

A container's backward runs each member's backward on the gradient of that member's output and
adds the input gradients of members that read the same input: the chain rule where branches meet.
A member's backward cache holds one call, so a module object may appear once in a Residual or a
Parallel (a second occurrence would overwrite the first one's cache).
"""

import numbers
from collections import OrderedDict

from .. import ops
from ..errors import ArgumentTypeError, ConfigError, ShapeError
from .module import Module

MERGES = ("concat", "sum")


def _check_module(owner, name, value):
    if not isinstance(value, Module):
        raise ArgumentTypeError(f"{owner}: expected a Module for {name}, got {type(value).__name__}")


def _check_distinct(owner, members):
    """Raise unless no module object is reachable from two of ``members`` (name -> Module)."""
    seen = {}
    for name, member in members.items():
        for module in member.modules():
            other = seen.setdefault(id(module), name)
            if other != name:
                raise ConfigError(
                    f"{owner}: the same {type(module).__name__} object is in both {other!r} and {name!r}; a module keeps the "
                    f"backward cache of one call, so each branch needs its own modules (build a second one)"
                )


def _take_device(container, members):
    """Give a container the namespace and device of its first member, as Sequential does."""
    first = next(iter(members), None)
    if first is not None:
        object.__setattr__(container, "xp", first.xp)
        object.__setattr__(container, "device", first.device)


def _add(a, b):
    """``a + b`` as a new array (never in place: either may be a view another layer keeps), in
    ``a``'s memory order (``ops.add``: the batch-last layout of a convolutional body carries on)."""
    return ops.add(a, b)


class Residual(Module):
    """``body(x) + shortcut(x)``, the residual connection of ResNet (He et al., 2016); with
    ``shortcut=None`` the identity, ``body(x) + x``.

    Backward routes the output gradient to both paths and adds the two input gradients:
    ``body.backward(g) + shortcut.backward(g)`` (``+ g`` for the identity). Parameters are named
    like PyTorch's ``self.body`` / ``self.shortcut`` attributes: ``body.0.weight``,
    ``shortcut.weight``.

    Args:
        body: the Module of the main path (usually a Sequential).
        shortcut: the Module of the skip path, e.g. a 1x1 ``Conv2d`` (and ``BatchNorm2d``) when
            the body changes the channel count or the resolution; None (default) for the
            identity. It must not share modules with ``body``.

    Shape:
        - Input: what ``body`` and ``shortcut`` accept.
        - Output: the shape of ``body(x)``, which must equal that of ``shortcut(x)`` (of ``x``
          for the identity), else a ShapeError naming both.
    """

    def __init__(self, body, shortcut=None):
        super().__init__()
        _check_module("Residual", "body", body)
        if shortcut is not None:
            _check_module("Residual", "shortcut", shortcut)
            _check_distinct("Residual", {"body": body, "shortcut": shortcut})
        self.body = body
        self.shortcut = shortcut
        _take_device(self, [body])

    def forward(self, x):
        y = self.body(x)
        s = x if self.shortcut is None else self.shortcut(x)
        if tuple(y.shape) != tuple(s.shape):
            path = "the input (identity shortcut)" if self.shortcut is None else "the shortcut's output"
            hint = "; give a shortcut that maps the input to the body's output shape, e.g. a 1x1 Conv2d" if self.shortcut is None else ""
            raise ShapeError(f"{self._name()}: the body's output has shape {tuple(y.shape)} but {path} has shape {tuple(s.shape)}; "
                             f"they are added, so they must match{hint}")
        return _add(y, s)

    def backward(self, grad):
        g_body = self.body.backward(grad)
        return _add(g_body, grad if self.shortcut is None else self.shortcut.backward(grad))

    def backward_params(self, grad):
        """Parameter gradients only, for a Residual whose input is data: no input gradient."""
        self.body.backward_params(grad)
        if self.shortcut is not None:
            self.shortcut.backward_params(grad)

    def extra_repr(self):
        return "shortcut=identity" if self.shortcut is None else ""


class Parallel(Module):
    """Runs branches side by side on the same input and merges their outputs: concatenated
    along ``dim`` (an Inception block, DenseNet's growth) or summed (ResNeXt's cardinality,
    a multi-branch block).

    PyTorch has no such module (its examples write the merge in ``forward``: ``torch.cat([b(x) for
    b in self.branches], 1)``); without autograd the merge needs its backward, so xpnn gives it one.
    The name is Lua Torch's (``nn.Parallel``; its ``nn.Concat(dim)`` is ``merge="concat"``) and
    the merges are Keras's merge layers ``Concatenate(axis)`` and ``Add``. Backward slices the
    output gradient along ``dim`` (concat) or passes it whole (sum) to each branch and adds the
    branches' input gradients.

    Args:
        *branches: the branch Modules, named "0", "1", ..., or one ``OrderedDict`` of name ->
            Module (as Sequential). At least one; no module may be in two branches.
        merge: "concat" (default) or "sum".
        dim: the dimension to concatenate along (default 1, the channels of NCHW); negative
            counts from the end. Ignored by "sum".

    Shape:
        - Input: what every branch accepts.
        - Output: "concat": the branches' output shape with the sizes along ``dim`` added (the
          other dimensions must agree); "sum": the branches' common output shape.
    """

    def __init__(self, *branches, merge="concat", dim=1):
        super().__init__()
        if len(branches) == 1 and isinstance(branches[0], OrderedDict):
            items = list(branches[0].items())
        else:
            items = [(str(i), b) for i, b in enumerate(branches)]
        if not items:
            raise ConfigError("Parallel: expected at least one branch, got none")
        for name, branch in items:
            _check_module("Parallel", f"branch {name}", branch)
        if merge not in MERGES:
            raise ConfigError(f"Parallel: expected merge to be one of {list(MERGES)}, got {merge!r}")
        if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
            raise ConfigError(f"Parallel: expected dim to be an int, got {dim!r}")
        _check_distinct("Parallel", OrderedDict(items))
        for name, branch in items:
            setattr(self, name, branch)
        self.merge = merge
        self.dim = int(dim)
        self._sizes = None  # the branches' sizes along the concatenated axis, and that axis
        _take_device(self, [b for _, b in items])

    def forward(self, x):
        outs = [branch(x) for branch in self._modules.values()]
        shapes = [tuple(o.shape) for o in outs]
        if self.merge == "sum":
            if any(s != shapes[0] for s in shapes):
                raise ShapeError(f"{self._name()}: expected the branches' outputs to have one shape to sum, got {self._shapes(shapes)}")
            total = outs[0]
            for out in outs[1:]:
                total = _add(total, out)
            return total
        ndim = len(shapes[0])
        if not -ndim <= self.dim < ndim or any(len(s) != ndim for s in shapes):
            raise ShapeError(f"{self._name()}: expected branch outputs with one number of dimensions, including dim={self.dim}, got {self._shapes(shapes)}")
        axis = self.dim % ndim
        rest = [s[:axis] + s[axis + 1:] for s in shapes]
        if any(r != rest[0] for r in rest):
            raise ShapeError(f"{self._name()}: expected the branches' outputs to agree in every dimension but dim={self.dim} "
                             f"to concatenate, got {self._shapes(shapes)}")
        self._sizes = (axis, tuple(s[axis] for s in shapes))
        return outs[0] if len(outs) == 1 else self.xp.concat(outs, axis=axis)

    def _shapes(self, shapes):
        return ", ".join(f"{name}: {shape}" for name, shape in zip(self._modules, shapes))

    def _pieces(self, grad):
        """Each branch's share of the output gradient."""
        if self.merge == "sum":
            return [grad] * len(self._modules)
        axis, sizes = self._sizes
        pieces, start = [], 0
        for size in sizes:
            index = (slice(None),) * axis + (slice(start, start + size), Ellipsis)
            pieces.append(grad[index])
            start += size
        return pieces

    def backward(self, grad):
        total = None
        for branch, piece in zip(self._modules.values(), self._pieces(grad)):
            g = branch.backward(piece)
            total = g if total is None else _add(total, g)
        return total

    def backward_params(self, grad):
        """Parameter gradients only, for a Parallel whose input is data: no input gradient."""
        for branch, piece in zip(self._modules.values(), self._pieces(grad)):
            branch.backward_params(piece)

    def extra_repr(self):
        return f"merge={self.merge!r}" + (f", dim={self.dim}" if self.merge == "concat" else "")


class _Container(Module):
    """What ModuleList and ModuleDict share: no forward or backward of their own."""

    def forward(self, *args):
        raise NotImplementedError(
            f"{type(self).__name__} holds modules but has no forward of its own (as in PyTorch); call its modules "
            f"from your module's forward, or use nn.Sequential to apply them in order"
        )

    def backward(self, grad):
        self._check_grad(grad)

    def _check_grad(self, grad):  # what the backward wrapper calls first: say why there is none
        raise NotImplementedError(
            f"{type(self).__name__} has no backward of its own; call its modules' backward from your module's backward, in reverse order"
        )

    def _adopt(self, module):
        """Take the namespace and device of the first module added to an empty container."""
        if not self._modules:
            _take_device(self, [module])


class ModuleList(_Container):
    """Holds modules in a list and registers them, as PyTorch's ``nn.ModuleList``: their
    parameters are in ``parameters()``, ``state_dict()`` (``"0.weight"``, or ``"layers.0.weight"``
    for a ModuleList assigned as ``self.layers``), ``to()`` and ``train()``/``eval()``.

    Indexing (negative too) returns a module, a slice a new ModuleList of the same module objects;
    ``len``, iteration, ``in``, ``append``, ``extend``, ``insert``, ``pop``, ``del`` and
    assignment by index work as on a list (members are renumbered "0", "1", ... after a change).
    There is no forward: your module's forward calls the members, and its backward calls their
    ``backward`` in reverse order.

    Args:
        modules: an iterable of Modules (default: empty).
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _config_args(self):
        """Described by its modules as they are now (after ``append``), not by its arguments."""
        return OrderedDict(modules=list(self._modules.values()))

    def _index(self, index):
        if not isinstance(index, numbers.Integral) or isinstance(index, bool):
            raise ArgumentTypeError(f"ModuleList: expected an int index or a slice, got {type(index).__name__}")
        n = len(self._modules)
        if not -n <= index < n:
            raise IndexError(f"ModuleList: index {index} is out of range for {n} modules")
        return str(int(index) % n)

    def _renumber(self, modules):
        for name in list(self._modules):
            delattr(self, name)
        for i, module in enumerate(modules):
            setattr(self, str(i), module)

    def _checked(self, module, where):
        if not isinstance(module, Module):
            raise ArgumentTypeError(f"ModuleList.{where}: expected a Module, got {type(module).__name__}")
        return module

    def __getitem__(self, index):
        if isinstance(index, slice):
            return ModuleList(list(self._modules.values())[index])
        return self._modules[self._index(index)]

    def __setitem__(self, index, module):
        setattr(self, self._index(index), self._checked(module, "__setitem__"))

    def __delitem__(self, index):
        modules = list(self._modules.values())
        if isinstance(index, slice):
            del modules[index]
        else:
            del modules[int(self._index(index))]
        self._renumber(modules)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules.values()))

    def __contains__(self, module):
        return any(m is module for m in self._modules.values())

    def __iadd__(self, modules):
        return self.extend(modules)

    def __add__(self, other):
        return ModuleList([*self, *other])

    def append(self, module):
        """Add ``module`` at the end; returns self."""
        self._adopt(self._checked(module, "append"))
        setattr(self, str(len(self._modules)), module)
        return self

    def extend(self, modules):
        """Append each module of an iterable; returns self."""
        if not hasattr(modules, "__iter__"):
            raise ArgumentTypeError(f"ModuleList.extend: expected an iterable of Modules, got {type(modules).__name__}")
        for module in list(modules):
            self.append(module)
        return self

    def insert(self, index, module):
        """Insert ``module`` before position ``index`` (as ``list.insert``)."""
        modules = list(self._modules.values())
        self._adopt(self._checked(module, "insert"))
        modules.insert(index, module)
        self._renumber(modules)

    def pop(self, index=-1):
        """Remove and return the module at ``index`` (default the last)."""
        module = self[index]
        del self[index]
        return module

    def __delattr__(self, name):
        self._modules.pop(name, None)
        object.__delattr__(self, name)


class ModuleDict(_Container):
    """Holds modules by string keys and registers them, as PyTorch's ``nn.ModuleDict``: their
    parameters are named by the keys (``"conv.weight"``) and reached by ``parameters()``,
    ``state_dict()``, ``to()`` and ``train()``/``eval()``.

    ``d[key]``, ``d[key] = module``, ``del d[key]``, ``key in d``, ``len``, iteration over the keys,
    ``keys()``, ``values()``, ``items()``, ``update()``, ``pop()`` and ``clear()`` work as on an
    ordered dict (insertion order is kept). There is no forward: your module's forward calls the
    members.

    Args:
        modules: a mapping of name -> Module, or an iterable of (name, Module) pairs (default:
            empty). A name must be a non-empty string without "." that is not already an
            attribute of the ModuleDict (such as "forward" or "training").
    """

    def __init__(self, modules=None):
        super().__init__()
        if modules is not None:
            self.update(modules)

    def _config_args(self):
        """Described by its modules as they are now. A config dict with a "class" key (or the
        single key "type") would read as a module, so such keys are saved as (name, module) pairs."""
        items = OrderedDict(self._modules)
        if "class" in items or list(items) == ["type"]:
            return OrderedDict(modules=[[k, m] for k, m in items.items()])
        return OrderedDict(modules=items)

    def _key(self, key):
        if not isinstance(key, str):
            raise ArgumentTypeError(f"ModuleDict: expected a string key, got {type(key).__name__} {key!r}")
        if key not in self._modules:
            raise KeyError(key)
        return key

    def __getitem__(self, key):
        return self._modules[self._key(key)]

    def __setitem__(self, key, module):
        if not isinstance(key, str):
            raise ArgumentTypeError(f"ModuleDict: expected a string key, got {type(key).__name__} {key!r}")
        if not key or "." in key:
            raise ConfigError(f"ModuleDict: expected a non-empty key without '.', got {key!r} (a '.' separates names in state_dict keys)")
        if key not in self._modules and hasattr(self, key):
            raise ConfigError(f"ModuleDict: the key {key!r} is already an attribute of ModuleDict; choose another name")
        if not isinstance(module, Module):
            raise ArgumentTypeError(f"ModuleDict: expected a Module for key {key!r}, got {type(module).__name__}")
        self._adopt(module)
        setattr(self, key, module)

    def __delitem__(self, key):
        self._modules.pop(self._key(key))
        object.__delattr__(self, key)

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(list(self._modules))

    def __contains__(self, key):
        return key in self._modules

    def keys(self):
        return self._modules.keys()

    def values(self):
        return self._modules.values()

    def items(self):
        return self._modules.items()

    def update(self, modules):
        """Add or replace members from a mapping or an iterable of (name, Module) pairs."""
        if hasattr(modules, "keys") and hasattr(modules, "__getitem__"):
            pairs = [(k, modules[k]) for k in modules.keys()]
        elif hasattr(modules, "__iter__") and not isinstance(modules, (str, Module)):
            pairs = list(modules)
            for i, pair in enumerate(pairs):
                if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                    raise ArgumentTypeError(f"ModuleDict.update: expected (name, Module) pairs, got {pair!r} at position {i}")
        else:
            raise ArgumentTypeError(f"ModuleDict.update: expected a mapping or an iterable of (name, Module) pairs, got {type(modules).__name__}")
        for key, module in pairs:
            self[key] = module

    def pop(self, key):
        """Remove and return the module of ``key``."""
        module = self[key]
        del self[key]
        return module

    def clear(self):
        for key in list(self._modules):
            del self[key]

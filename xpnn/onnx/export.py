"""The export driver: the converter registry, the graph being built (``ExportContext``) and
``export``. The converters themselves are in ``converters.py``."""

import numpy as np

from .. import backend
from ..errors import BackendUnavailableError, ConfigError

DEFAULT_OPSET = 17
MIN_OPSET = 17  # LayerNormalization; Gelu (20) and Mish (18) fall back to their formulas below those
INPUT, OUTPUT, BATCH = "input", "output", "batch"

_CONVERTERS = {}


class UnsupportedLayerError(ConfigError):
    """A layer in the model has no ONNX form (or none that xpnn writes)."""


def register_converter(cls):
    """Decorator: ``@register_converter(MyLayer)`` over ``def convert(ctx, layer, x, value)``,
    which emits ``layer``'s nodes with ``ctx.node`` / ``ctx.constant`` and returns the name of its
    output. ``x`` is the name of the layer's input in the graph and ``value`` the array xpnn's own
    forward received on the sample input (for its shape). A converter that converts members
    itself (a container) returns ``(name, output_array)``, calling ``ctx.convert`` on them."""

    def add(function):
        _CONVERTERS[cls] = function
        return function

    return add


def supported_layers():
    """The names of the classes with a converter."""
    _load_converters()
    return sorted(cls.__name__ for cls in _CONVERTERS)


def _load_converters():
    from . import converters  # noqa: F401  (fills the registry)


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError as err:
        raise BackendUnavailableError(
            f"ONNX export needs the onnx package, which is not installed ({err}); install the extra: pip install 'xpnn[onnx]'"
        ) from None
    return onnx, helper, numpy_helper


def _converter_for(module):
    return converter_for_class(type(module))


def converter_for_class(cls):
    """The converter of the nearest class in ``cls``'s MRO that has one, unless a class before it
    defines its own ``forward`` (a subclass that only changes ``__init__``, as the models do of
    Sequential and ReLU6 of Hardtanh, converts as its parent; one that computes something else
    has no converter until it registers one)."""
    for base in cls.__mro__:
        if base in _CONVERTERS:
            return _CONVERTERS[base]
        if "forward" in base.__dict__:
            return None
    return None


class ExportContext:
    """The graph under construction, handed to every converter."""

    def __init__(self, opset, helper, numpy_helper):
        self.opset = opset
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes = []
        self.initializers = []
        self._names = set()
        self._paths = []

    @property
    def path(self):
        """The dotted path of the module being converted ("" for the model itself)."""
        return self._paths[-1] if self._paths else ""

    def unsupported(self, module, reason):
        """The error for ``module`` (being converted) whose configuration has no ONNX form."""
        where = self.path or "the model"
        return UnsupportedLayerError(f"xpnn.onnx.export: {where} ({type(module).__name__}): {reason}")

    def unique(self, name):
        """``name``, or ``name_2``, ``name_3``, ... if taken."""
        candidate, i = name, 1
        while candidate in self._names:
            i += 1
            candidate = f"{name}_{i}"
        self._names.add(candidate)
        return candidate

    def constant(self, array, what, dtype=np.float32):
        """Add ``array`` (any backend's, or host data) as an initializer of ``dtype`` named after
        the current path and ``what``; return its name."""
        host = np.ascontiguousarray(np.asarray(backend.to_numpy(array) if hasattr(array, "shape") else array, dtype=dtype))
        name = self.unique(f"{self.path or 'model'}.{what}")
        self.initializers.append(self.numpy_helper.from_array(host, name=name))
        return name

    def int64s(self, values, what):
        """A 1-D int64 initializer (shapes, axes, pads)."""
        return self.constant(np.asarray(values, dtype=np.int64).reshape(-1), what, dtype=np.int64)

    def node(self, op, inputs, outputs=1, **attributes):
        """Add one node named after the current path; return its output name (or a list of them
        when ``outputs`` > 1). An input given as "" is an omitted optional input."""
        name = self.path or "model"
        node_name = self.unique(f"{name}/{op}")
        out = [self.unique(f"{name}/{op}:{i}" if outputs > 1 else f"{name}/{op}:out") for i in range(outputs)]
        self.nodes.append(self.helper.make_node(op, list(inputs), out, name=node_name, **attributes))
        return out if outputs > 1 else out[0]

    def convert(self, module, x, value, path):
        """Emit ``module``'s nodes for input ``x`` (its value on the sample: ``value``); return
        ``(output name, output value)``."""
        converter = _converter_for(module)
        if converter is None:
            where = "the model" if not path else path
            raise UnsupportedLayerError(
                f"xpnn.onnx.export: {where} ({type(module).__name__}) has no ONNX form that xpnn writes; the layers with one are "
                f"{', '.join(supported_layers())} (a layer of your own can have one through xpnn.onnx.register_converter)"
            )
        self._paths.append(path)
        try:
            result = converter(self, module, x, value)
            return result if isinstance(result, tuple) else (result, module(value))
        finally:
            self._paths.pop()

    def child(self, name):
        """The path of the current module's member ``name``."""
        return f"{self.path}.{name}" if self.path else str(name)


def _sample(model, sample_input):
    """The sample as an array of the model's namespace: an array, or a shape for zeros."""
    xp = model.xp
    if isinstance(sample_input, (tuple, list)) and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in sample_input):
        if not sample_input or min(sample_input) < 1:
            raise ConfigError(f"xpnn.onnx.export: expected sample_input to be an array or a shape of positive ints, got {tuple(sample_input)}")
        params = list(model.parameters())
        dtype = params[0].data.dtype if params else xp.float32
        return xp.zeros(tuple(int(v) for v in sample_input), dtype=dtype, device=model.device)
    if not hasattr(sample_input, "shape") or not hasattr(sample_input, "dtype"):
        raise ConfigError(f"xpnn.onnx.export: expected sample_input to be an array or a shape, got {type(sample_input).__name__}")
    if len(sample_input.shape) < 1:
        raise ConfigError("xpnn.onnx.export: expected a sample_input with a batch dimension, got a 0-d array")
    return backend.asarray(sample_input, xp, device=model.device)


def export(model, sample_input, path=None, opset=DEFAULT_OPSET, dynamic_batch=True, check=True):
    """Export ``model`` in eval form (BatchNorm's running statistics, no Dropout) as an ONNX model.

    Args:
        model: an xpnn Module whose layers all have converters (``supported_layers()``).
        sample_input: an input array of the model's namespace, or its shape (zeros are used); it
            fixes every dimension but the first.
        path: where to write the ``.onnx`` file (atomically), or None to only return the model.
        opset: the ONNX opset, at least 17 (LayerNormalization). Gelu is its own operator from 20
            and Mish from 18; below those their formulas are written.
        dynamic_batch: name the first dimension of the input and output "batch" (any size);
            False fixes it to the sample's.
        check: run ``onnx.checker.check_model(full_check=True)`` on the result.

    Returns:
        The ``onnx.ModelProto``. Its input is "input" and its output "output", float32.

    Raises:
        UnsupportedLayerError: a layer has no ONNX form; the message names it and its path.
        BackendUnavailableError: the ``onnx`` package is not installed (extra ``xpnn[onnx]``).
    """
    from ..nn import Module, no_grad

    onnx, helper, numpy_helper = _onnx()
    _load_converters()
    if not isinstance(model, Module):
        raise ConfigError(f"xpnn.onnx.export: expected an xpnn Module, got {type(model).__name__}")
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ConfigError(f"xpnn.onnx.export: expected opset an int from {MIN_OPSET} to {onnx.defs.onnx_opset_version()} (this onnx), got {opset!r}")
    x = _sample(model, sample_input)
    ctx = ExportContext(int(opset), helper, numpy_helper)
    saved = [(mod, dict(mod.__dict__)) for mod in {id(m): m for m in model.modules()}.values()]
    try:
        model.eval()
        with no_grad():
            name, y = ctx.convert(model, INPUT, x, "")
    finally:  # training flags, caches and buffers as they were
        for mod, attributes in saved:
            mod.__dict__.clear()
            mod.__dict__.update(attributes)
    if not hasattr(y, "shape"):
        raise UnsupportedLayerError(f"xpnn.onnx.export: the model returns a {type(y).__name__}, expected one array")
    _name_output(ctx, name)
    batch = BATCH if dynamic_batch else int(x.shape[0])
    graph = helper.make_graph(
        ctx.nodes, type(model).__name__,
        [helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, [batch, *map(int, x.shape[1:])])],
        [helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, _output_shape(y, x, dynamic_batch))],
        initializer=ctx.initializers,
    )
    from .. import __version__

    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", int(opset))], producer_name="xpnn", producer_version=__version__)
    proto.ir_version = min(proto.ir_version, _ir_version_for(onnx, int(opset)))
    if check:
        onnx.checker.check_model(proto, full_check=True)
    if path is not None:
        from ..files import atomic_write

        data = proto.SerializeToString()
        with atomic_write(path) as f:
            f.write(data)
    return proto


def _output_shape(y, x, dynamic_batch):
    """The output's declared shape: its first dimension is the batch when it keeps the input's
    (an output that merged the batch into another dimension has that one unnamed)."""
    shape = [int(d) for d in y.shape]
    if dynamic_batch and shape:
        shape[0] = BATCH if y.ndim >= 1 and shape[0] == int(x.shape[0]) else None
    return shape


def _ir_version_for(onnx, opset):
    """The IR version that goes with ``opset`` (so older runtimes load the file), else the newest."""
    for entry in onnx.helper.VERSION_TABLE:
        if entry[2] == opset:
            return entry[1]
    return onnx.IR_VERSION


def _name_output(ctx, name):
    """Give the last tensor the graph's output name."""
    if name == INPUT or any(init.name == name for init in ctx.initializers):
        ctx.nodes.append(ctx.helper.make_node("Identity", [name], [OUTPUT], name=ctx.unique("output/Identity")))
        return
    for node in ctx.nodes:
        node.output[:] = [OUTPUT if o == name else o for o in node.output]
        node.input[:] = [OUTPUT if i == name else i for i in node.input]

"""summary(model, input_shape): every module in call order with its output shape and parameter
count, and the totals, as Keras's ``model.summary()`` and torchinfo show them.

The output shapes come from one forward pass on a zero input, traced through the forward wrapper
every layer has (``module._tracer``), so they are what the layers really return, in the order
they really run, nested containers included. The pass runs in eval mode under ``no_grad`` and
each module's attributes are put back afterwards: the training flags, the buffers and any backward
cache a forward before it left are as they were.
"""

import numbers

import numpy as np

from .. import backend
from ..errors import ArgumentTypeError, ConfigError, ShapeError, XpnnError
from . import module as _module
from .grad_mode import no_grad
from .module import Module

# The batch the forward pass runs on when no batch size is given; shown as -1. Two, not one, so
# layers that use batch statistics in eval mode (BatchNorm without running statistics) work.
TRACE_BATCH = 2
MB = 1e6  # torchinfo's megabyte


class SummaryRow:
    """One module call: ``name`` (the attribute name, the class name for the model itself),
    ``type`` (the class name), ``depth`` (0 for the model), ``output_shape`` (a tuple with -1 for
    an unspecified batch, a list of them for a tuple output, None for another output),
    ``params`` (the parameters first counted at this row; None for a repeated call)."""

    __slots__ = ("name", "type", "depth", "output_shape", "params", "module", "output_bytes", "input_shape")

    def __init__(self, name, module, depth, input_shape):
        self.name, self.module, self.depth, self.input_shape = name, module, depth, input_shape
        self.type = type(module).__name__
        self.output_shape = self.params = None
        self.output_bytes = 0

    def __repr__(self):
        return f"SummaryRow({self.name!r}, {self.type}, depth={self.depth}, output_shape={self.output_shape}, params={self.params})"


class ModelSummary(str):
    """The summary table: a ``str`` (print it, compare it, write it to a file) that a notebook
    shows as the table, with the numbers behind it as attributes.

    Attributes:
        rows: the ``SummaryRow`` of each module call, in call order.
        total_params: ``model.num_parameters()``.
        trainable_params: the same (every xpnn Parameter is trained).
        params_bytes, buffers_bytes: the memory the parameters and the buffers take.
        buffer_values: the number of values in the buffers (BatchNorm's running statistics).
        input_bytes, forward_bytes: the input's and the leaf modules' outputs' memory for the
            batch given (one sample when none was).
    """

    def __repr__(self):
        return str.__str__(self)


def summary(model, input_shape, batch_size=None, dtype=None):
    """The table of ``model``'s modules in call order (nested ones indented), each with its
    output shape and parameter count, and the totals: total and trainable parameters, the
    parameters' memory and, for the batch, the input's and the outputs' memory.

    Args:
        model: a Module.
        input_shape: the shape of one input sample, without the batch dimension, e.g.
            ``(1, 28, 28)`` for MNIST images, or an int for vectors.
        batch_size: the batch size to show; by default the batch dimension shows as -1.
        dtype: the input's dtype; default the model's first parameter's (float32 without one).

    Returns:
        a ``ModelSummary``: the table as a ``str``, with its numbers as attributes.

    Raises:
        ConfigError: a bad ``input_shape`` or ``batch_size``.
        ShapeError (or the layer's own error type): the input does not fit the model; the
            message names the module that failed, with the shape it received.
    """
    if not isinstance(model, Module):
        raise ArgumentTypeError(f"summary: expected a Module, got {type(model).__name__}")
    sample = _checked_shape(input_shape)
    if batch_size is not None and (not _is_int(batch_size) or batch_size < 1):
        raise ConfigError(f"summary: expected batch_size to be a positive int or None, got {batch_size!r}")
    params = list(model.parameters())
    if dtype is None:
        dtype = params[0].dtype if params else None
    dtype = backend.resolve_dtype(dtype, model.xp, where="summary")
    batch = TRACE_BATCH if batch_size is None else int(batch_size)
    x = model.xp.zeros((batch, *sample), dtype=dtype, device=model.device)

    rows = _trace(model, x, batch, batch_size is None, sample)
    seen = set()
    for row in rows:
        if row.params is not None:  # the module's first call: its parameters not counted yet
            own = [p for p in row.module._parameters.values() if id(p) not in seen]
            seen.update(id(p) for p in own)
            row.params = sum(p.size for p in own)
    per = 1 if batch_size is None else batch  # the batch the sizes are given for
    buffers = list(model.buffers())
    table_numbers = {
        "rows": rows,
        "total_params": model.num_parameters(),
        "trainable_params": model.num_parameters(),
        "buffer_values": sum(_size(b) for b in buffers),
        "params_bytes": sum(p.size * _itemsize(p.dtype) for p in params),
        "buffers_bytes": sum(_nbytes(b) for b in buffers),
        "input_bytes": _nbytes(x) * per // batch,
        "forward_bytes": sum(r.output_bytes for r in rows if not r.module._modules) * per // batch,
    }
    table = ModelSummary(_render(model, sample, batch_size, **table_numbers))
    for name, value in table_numbers.items():
        setattr(table, name, value)
    return table


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _checked_shape(input_shape):
    dims = (input_shape,) if _is_int(input_shape) else input_shape
    try:
        dims = tuple(dims)
    except TypeError:
        dims = None
    if not dims or not all(_is_int(d) and d >= 1 for d in dims):
        raise ConfigError(f"summary: expected input_shape to be the shape of one sample without the batch dimension "
                          f"(positive ints, e.g. (1, 28, 28)), got {input_shape!r}")
    return tuple(int(d) for d in dims)


def _itemsize(dtype):
    return np.dtype(backend.dtype_name(dtype)).itemsize


def _nbytes(array):
    n = 1
    for d in array.shape:
        n *= d
    return n * _itemsize(array.dtype)


def _trace(model, x, batch, hide_batch, sample):
    """Run ``model`` on ``x`` in eval mode under no_grad, recording each module call; every
    module's attributes are restored afterwards, whatever happens."""
    paths = {}
    for path, mod in model.named_modules():
        paths.setdefault(id(mod), path)
    rows, stack, counted = [], [], set()

    def name_of(mod):
        """The module's path below the module whose forward called it: its attribute name for a
        child ("conv"), the path through a container without a forward ("blocks.0" for a
        ModuleList's member, "heads.cls" for a ModuleDict's)."""
        path = paths.get(id(mod))
        if not path:
            return type(mod).__name__
        caller = paths.get(id(stack[-1].module), "") if stack else ""
        return path[len(caller) + 1:] if caller and path.startswith(caller + ".") else path

    def shown(shape):
        shape = tuple(int(d) for d in shape)
        return (-1, *shape[1:]) if hide_batch and shape and shape[0] == batch else shape

    def tracer(mod, args):
        first = getattr(args[0], "shape", None) if args else None
        row = SummaryRow(name_of(mod), mod, len(stack), None if first is None else tuple(first))
        row.params = None if id(mod) in counted else 0  # 0: count here; None: a repeated call
        counted.add(id(mod))
        rows.append(row)
        stack.append(row)

        def done(out):
            stack.pop()
            if hasattr(out, "shape"):
                row.output_shape, row.output_bytes = shown(out.shape), _nbytes(out)
            elif isinstance(out, (tuple, list)) and all(hasattr(o, "shape") for o in out):
                row.output_shape = [shown(o.shape) for o in out]
                row.output_bytes = sum(_nbytes(o) for o in out)

        return done

    saved = [(mod, dict(mod.__dict__)) for mod in {id(m): m for m in model.modules()}.values()]
    previous = _module._tracer
    _module._tracer = tracer
    try:
        model.eval()
        with no_grad():
            model(x)
    except Exception as err:
        if not stack:
            raise
        raise _failure(model, stack[-1], sample, err) from err
    finally:
        _module._tracer = previous
        for mod, attributes in saved:
            mod.__dict__.clear()
            mod.__dict__.update(attributes)
    return rows


def _failure(model, row, sample, err):
    """The error to raise when ``row``'s module failed: the same kind, naming the module."""
    where = row.type if row.module is model else f"{row.name} ({row.type})"
    got = f" on an input of shape {row.input_shape}" if row.input_shape is not None else ""
    message = f"summary of {type(model).__name__} with input_shape {sample}: {where} failed{got}: {err}"
    kind = type(err) if isinstance(err, XpnnError) else ShapeError
    try:
        return kind(message)
    except TypeError:
        return ShapeError(message)


def _shape_text(shape):
    if shape is None:
        return "--"
    if isinstance(shape, list):
        return "[" + ", ".join(_shape_text(s) for s in shape) + "]"
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _render(model, sample, batch_size, rows, total_params, trainable_params, buffer_values, params_bytes,
            buffers_bytes, input_bytes, forward_bytes):
    cells = [("Layer (type)", "Output Shape", "Param #")]
    for row in rows:
        label = row.type if row.module is model else f"{row.name} ({row.type})"
        params = "(recursive)" if row.params is None else (f"{row.params:,}" if row.params else "--")
        cells.append(("  " * row.depth + label, _shape_text(row.output_shape), params))
    w0 = max(len(c[0]) for c in cells) + 4
    w1 = max(len(c[1]) for c in cells) + 4
    w2 = max(len(c[2]) for c in cells)
    line, thin = "=" * (w0 + w1 + w2), "-" * (w0 + w1 + w2)
    out = [line, f"{cells[0][0]:<{w0}}{cells[0][1]:<{w1}}{cells[0][2]:>{w2}}", line]
    out += [f"{a:<{w0}}{b:<{w1}}{c:>{w2}}" for a, b, c in cells[1:]]
    out += [line, f"Total params: {total_params:,}", f"Trainable params: {trainable_params:,}",
            f"Non-trainable params: {total_params - trainable_params:,}"]
    if buffer_values:
        out.append(f"Buffer values (not trained): {buffer_values:,}")
    size_of = "one sample" if batch_size is None else f"batch of {batch_size}"
    out += [thin, f"Input shape: {_shape_text(((-1,) if batch_size is None else (batch_size,)) + sample)}",
            f"Input size (MB, {size_of}): {input_bytes / MB:.2f}",
            f"Forward pass size (MB, {size_of}): {forward_bytes / MB:.2f}",
            f"Params size (MB): {params_bytes / MB:.2f}"]
    if buffer_values:
        out.append(f"Buffers size (MB): {buffers_bytes / MB:.2f}")
    total_bytes = input_bytes + forward_bytes + params_bytes + buffers_bytes
    out += [f"Estimated total size (MB): {total_bytes / MB:.2f}", line]
    return "\n".join(out)


def _size(array):
    n = 1
    for d in array.shape:
        n *= d
    return n

"""One converter per layer class: ``convert(ctx, layer, x, value)`` emits the layer's ONNX nodes
(eval form) for the input tensor named ``x``, whose value on the sample input is ``value``, and
returns its output's name (containers return ``(name, output value)``). See ``export.py``."""

import numpy as np

from .. import backend, models, nn
from ..nn.pooling import _adaptive_matrix
from ..nn.upsample import _bilinear_matrix, _nearest_sources
from .export import register_converter


def _shape(value):
    return tuple(int(d) for d in value.shape)


# ---- linear maps and convolutions -----------------------------------------------------------------

def _linear_layout(layer):
    """True when ``layer.weight`` is stored (out_features, in_features) (PyTorch's layout), False
    for (in_features, out_features). Decided from the shape, and for a square weight by running
    the layer's own forward on a probe, so the export follows whichever layout Linear keeps."""
    w = layer.weight.data
    shape = tuple(w.shape)
    n_in, n_out = layer.in_features, layer.out_features
    if n_in != n_out:
        return shape == (n_out, n_in)
    host = backend.to_numpy(w).astype(np.float64)
    probe = np.random.default_rng(0).standard_normal((2, n_in))
    y = backend.to_numpy(layer(backend.asarray(probe, layer.xp, w.dtype, layer.device))).astype(np.float64)
    if layer.bias is not None:
        y = y - backend.to_numpy(layer.bias.data).astype(np.float64)
    return bool(np.abs(y - probe @ host.T).max() < np.abs(y - probe @ host).max())


@register_converter(nn.Linear)
def linear(ctx, layer, x, value):
    out_in = _linear_layout(layer)
    weight = ctx.constant(layer.weight.data, "weight")
    bias = ctx.constant(layer.bias.data, "bias") if layer.bias is not None else ""
    if value.ndim == 2:
        return ctx.node("Gemm", [x, weight, bias] if bias else [x, weight], transB=int(out_in))
    if out_in:
        weight = ctx.node("Transpose", [weight], perm=[1, 0])
    y = ctx.node("MatMul", [x, weight])
    return ctx.node("Add", [y, bias]) if bias else y


def _conv(ctx, layer, x, op, spatial, **extra):
    """Conv or ConvTranspose over the last ``spatial`` axes of the layer's geometry tuples."""
    pick = (lambda pair: list(pair)) if spatial == 2 else (lambda pair: [pair[-1]])
    kernel, stride, padding, dilation = (pick(p) for p in (layer.kernel_size, layer.stride, layer.padding, layer.dilation))
    inputs = [x, ctx.constant(layer.weight.data, "weight")]
    if layer.bias is not None:
        inputs.append(ctx.constant(layer.bias.data, "bias"))
    return ctx.node(op, inputs, kernel_shape=kernel, strides=stride, pads=padding + padding, dilations=dilation, group=layer.groups, **extra)


@register_converter(nn.Conv2d)
def conv2d(ctx, layer, x, value):
    return _conv(ctx, layer, x, "Conv", 2)


@register_converter(nn.Conv1d)
def conv1d(ctx, layer, x, value):
    return _conv(ctx, layer, x, "Conv", 1)  # its geometry is 1-tuples: the last entry is the one


@register_converter(nn.ConvTranspose2d)
def conv_transpose2d(ctx, layer, x, value):
    output_padding = list(layer.output_padding)
    if all(op < s for op, s in zip(output_padding, layer.stride)):
        return _conv(ctx, layer, x, "ConvTranspose", 2, output_padding=output_padding)
    # xpnn also allows output_padding >= stride (when below the dilation); ONNX does not: the
    # extra rows and columns reach no window, so they are zeros plus the bias.
    kernel, stride, padding, dilation = (list(p) for p in (layer.kernel_size, layer.stride, layer.padding, layer.dilation))
    y = ctx.node("ConvTranspose", [x, ctx.constant(layer.weight.data, "weight")], kernel_shape=kernel, strides=stride,
                 pads=padding + padding, dilations=dilation, group=layer.groups)
    y = ctx.node("Pad", [y, ctx.int64s([0, 0, 0, 0, 0, 0, *output_padding], "output_padding")])
    if layer.bias is None:
        return y
    return ctx.node("Add", [y, ctx.constant(backend.to_numpy(layer.bias.data).reshape(-1, 1, 1), "bias")])


# ---- pooling ----------------------------------------------------------------------------------------

def _pool_geometry(layer, spatial):
    pick = (lambda pair: list(pair)) if spatial == 2 else (lambda pair: [pair[-1]])
    return pick(layer.kernel_size), pick(layer.stride), pick(layer.padding)


@register_converter(nn.MaxPool2d)
def max_pool2d(ctx, layer, x, value):
    kernel, stride, padding = _pool_geometry(layer, 2)
    return ctx.node("MaxPool", [x], kernel_shape=kernel, strides=stride, pads=padding + padding, dilations=list(layer.dilation))


@register_converter(nn.MaxPool1d)
def max_pool1d(ctx, layer, x, value):
    kernel, stride, padding = _pool_geometry(layer, 1)
    return ctx.node("MaxPool", [x], kernel_shape=kernel, strides=stride, pads=padding + padding, dilations=[layer.dilation[1]])


def _avg_pool(ctx, layer, x, spatial):
    kernel, stride, padding = _pool_geometry(layer, spatial)
    return ctx.node("AveragePool", [x], kernel_shape=kernel, strides=stride, pads=padding + padding,
                    count_include_pad=int(layer.count_include_pad))


@register_converter(nn.AvgPool2d)
def avg_pool2d(ctx, layer, x, value):
    return _avg_pool(ctx, layer, x, 2)


@register_converter(nn.AvgPool1d)
def avg_pool1d(ctx, layer, x, value):
    return _avg_pool(ctx, layer, x, 1)


@register_converter(nn.AdaptiveAvgPool2d)
def adaptive_avg_pool2d(ctx, layer, x, value):
    h, w = _shape(value)[2:]
    oh, ow = layer._target(value)
    if (oh, ow) == (1, 1):
        return ctx.node("GlobalAveragePool", [x])
    if h % oh == 0 and w % ow == 0:  # equal windows that tile the image
        return ctx.node("AveragePool", [x], kernel_shape=[h // oh, w // ow], strides=[h // oh, w // ow])
    # PyTorch's overlapping windows, as xpnn computes them: A_h @ x @ A_w^T (fixed H and W)
    y = ctx.node("MatMul", [ctx.constant(_adaptive_matrix(h, oh), "rows"), x])
    return ctx.node("MatMul", [y, ctx.constant(_adaptive_matrix(w, ow).T, "columns")])


# ---- normalisation -----------------------------------------------------------------------------------

def _ones_zeros(ctx, layer, n, weight, bias):
    scale = ctx.constant(weight.data if weight is not None else np.ones(n), "weight")
    shift = ctx.constant(bias.data if bias is not None else np.zeros(n), "bias")
    return scale, shift


def _batch_norm(ctx, layer, x, value):
    if not layer.track_running_stats:
        raise ctx.unsupported(layer, "without track_running_stats it normalises by the batch's own statistics in eval mode too, "
                                     "which ONNX's BatchNormalization does not; export a model with running statistics")
    scale, shift = _ones_zeros(ctx, layer, layer.num_features, layer.weight, layer.bias)
    mean = ctx.constant(layer.running_mean, "running_mean")
    var = ctx.constant(layer.running_var, "running_var")
    return ctx.node("BatchNormalization", [x, scale, shift, mean, var], epsilon=layer.eps)


register_converter(nn.BatchNorm1d)(_batch_norm)
register_converter(nn.BatchNorm2d)(_batch_norm)


@register_converter(nn.LayerNorm)
def layer_norm(ctx, layer, x, value):
    k = len(layer.normalized_shape)
    scale = ctx.constant(layer.weight.data if layer.weight is not None else np.ones(layer.normalized_shape), "weight")
    inputs = [x, scale] + ([ctx.constant(layer.bias.data, "bias")] if layer.bias is not None else [])
    return ctx.node("LayerNormalization", inputs, axis=-k, epsilon=layer.eps)


@register_converter(nn.GroupNorm)
def group_norm(ctx, layer, x, value):
    # (N, G, rest) normalised per (sample, group) by InstanceNormalization, then the per-channel affine
    shape = _shape(value)
    g = layer.num_groups
    grouped = ctx.node("Reshape", [x, ctx.int64s([0, g, -1], "grouped_shape")])
    normal = ctx.node("InstanceNormalization", [grouped, ctx.constant(np.ones(g), "group_scale"), ctx.constant(np.zeros(g), "group_bias")],
                      epsilon=layer.eps)
    y = ctx.node("Reshape", [normal, ctx.int64s([0, *shape[1:]], "shape")])
    if not layer.affine:
        return y
    channel = (-1,) + (1,) * (len(shape) - 2)
    y = ctx.node("Mul", [y, ctx.constant(backend.to_numpy(layer.weight.data).reshape(channel), "weight")])
    return ctx.node("Add", [y, ctx.constant(backend.to_numpy(layer.bias.data).reshape(channel), "bias")])


# ---- activations -------------------------------------------------------------------------------------

def _simple(op, **attributes):
    def convert(ctx, layer, x, value):
        return ctx.node(op, [x], **attributes)

    return convert


for _cls, _op in ((nn.ReLU, "Relu"), (nn.Sigmoid, "Sigmoid"), (nn.Tanh, "Tanh"), (nn.Softsign, "Softsign")):
    register_converter(_cls)(_simple(_op))


@register_converter(nn.LeakyReLU)
def leaky_relu(ctx, layer, x, value):
    return ctx.node("LeakyRelu", [x], alpha=layer.negative_slope)


@register_converter(nn.ELU)
def elu(ctx, layer, x, value):
    return ctx.node("Elu", [x], alpha=layer.alpha)


@register_converter(nn.GELU)
def gelu(ctx, layer, x, value):
    if ctx.opset >= 20:
        return ctx.node("Gelu", [x], approximate=layer.approximate)
    half_x = ctx.node("Mul", [x, ctx.constant(0.5, "half")])
    if layer.approximate == "tanh":  # 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
        cube = ctx.node("Mul", [ctx.node("Mul", [x, x]), x])
        inner = ctx.node("Add", [x, ctx.node("Mul", [cube, ctx.constant(0.044715, "cubic")])])
        core = ctx.node("Tanh", [ctx.node("Mul", [inner, ctx.constant(np.sqrt(2 / np.pi), "scale")])])
    else:  # 0.5 x (1 + erf(x / sqrt(2)))
        core = ctx.node("Erf", [ctx.node("Mul", [x, ctx.constant(1 / np.sqrt(2), "scale")])])
    return ctx.node("Mul", [half_x, ctx.node("Add", [core, ctx.constant(1.0, "one")])])


@register_converter(nn.SiLU)
def silu(ctx, layer, x, value):
    return ctx.node("Mul", [x, ctx.node("Sigmoid", [x])])


@register_converter(nn.Softplus)
def softplus(ctx, layer, x, value):
    # log(1 + exp(beta x)) / beta, and x itself where beta x > threshold (PyTorch's rule)
    z = x if layer.beta == 1 else ctx.node("Mul", [x, ctx.constant(layer.beta, "beta")])
    soft = ctx.node("Softplus", [z])
    if layer.beta != 1:
        soft = ctx.node("Div", [soft, ctx.constant(layer.beta, "beta")])
    linear = ctx.node("Greater", [z, ctx.constant(layer.threshold, "threshold")])
    return ctx.node("Where", [linear, x, soft])


@register_converter(nn.Mish)
def mish(ctx, layer, x, value):
    if ctx.opset >= 18:
        return ctx.node("Mish", [x])
    return ctx.node("Mul", [x, ctx.node("Tanh", [ctx.node("Softplus", [x])])])


@register_converter(nn.Hardtanh)
def hardtanh(ctx, layer, x, value):  # ReLU6 too (a subclass without its own forward)
    return ctx.node("Clip", [x, ctx.constant(layer.min_val, "min"), ctx.constant(layer.max_val, "max")])


@register_converter(nn.Hardswish)
def hardswish(ctx, layer, x, value):
    return ctx.node("HardSwish", [x])


@register_converter(nn.PReLU)
def prelu(ctx, layer, x, value):
    slope = backend.to_numpy(layer.weight.data)
    if layer.num_parameters != 1:  # one slope per channel (dimension 1), broadcast over the rest
        slope = slope.reshape((-1,) + (1,) * (value.ndim - 2))
    return ctx.node("PRelu", [x, ctx.constant(slope, "weight")])


@register_converter(nn.Softmax)
def softmax(ctx, layer, x, value):
    return ctx.node("Softmax", [x], axis=int(layer.dim))


@register_converter(nn.LogSoftmax)
def log_softmax(ctx, layer, x, value):
    return ctx.node("LogSoftmax", [x], axis=int(layer.dim))


# ---- shapes and identities ---------------------------------------------------------------------------

@register_converter(nn.Flatten)
def flatten(ctx, layer, x, value):
    shape = _shape(value)
    ndim = len(shape)
    start, end = layer.start_dim % ndim, layer.end_dim % ndim
    if start == 1 and end == ndim - 1:
        return ctx.node("Flatten", [x], axis=1)
    # Reshape: dimensions before start copied (0: the batch stays dynamic), the merged one -1
    merged = [-1]
    target = [0] * start + merged + list(shape[end + 1:])
    return ctx.node("Reshape", [x, ctx.int64s(target, "shape")])


def _identity(ctx, layer, x, value):
    return x  # no node: eval-mode Dropout and Identity pass the tensor on


for _cls in (nn.Identity, nn.Dropout, nn.Dropout2d):
    register_converter(_cls)(_identity)


@register_converter(nn.Upsample)
def upsample(ctx, layer, x, value):
    # The exact index and weight formulas of xpnn (PyTorch's), for the sample's fixed H and W:
    # nearest as a Gather per axis, bilinear as two interpolation matrices.
    h, w = _shape(value)[2:]
    oh, ow = layer._output_size(h, w)
    scales = (None, None) if layer._scale is None or layer.recompute_scale_factor else layer._scale
    y = x
    if layer.mode == "bilinear":
        rows = _bilinear_matrix(h, oh, scales[0], bool(layer.align_corners))
        cols = _bilinear_matrix(w, ow, scales[1], bool(layer.align_corners))
        y = ctx.node("MatMul", [ctx.constant(rows, "rows"), y])
        return ctx.node("MatMul", [y, ctx.constant(np.asarray(cols).T, "columns")])
    for axis, size, out, scale in ((2, h, oh, scales[0]), (3, w, ow, scales[1])):
        sources = np.asarray(_nearest_sources(size, out, scale), dtype=np.int64)
        if not np.array_equal(sources, np.arange(size)):
            y = ctx.node("Gather", [y, ctx.int64s(sources, f"sources{axis}")], axis=axis)
    return y


# ---- containers and the models' own layers ---------------------------------------------------------

@register_converter(nn.Sequential)
def sequential(ctx, layer, x, value):
    for name, member in layer._modules.items():
        x, value = ctx.convert(member, x, value, ctx.child(name))
    return x, value


@register_converter(nn.Residual)
def residual(ctx, layer, x, value):
    y, y_value = ctx.convert(layer.body, x, value, ctx.child("body"))
    s, s_value = (x, value) if layer.shortcut is None else ctx.convert(layer.shortcut, x, value, ctx.child("shortcut"))
    if tuple(y_value.shape) != tuple(s_value.shape):
        return ctx.node("Add", [y, s]), layer(value)  # xpnn's own forward raises its shape error
    return ctx.node("Add", [y, s]), y_value + s_value


@register_converter(nn.Parallel)
def parallel(ctx, layer, x, value):
    converted = [ctx.convert(member, x, value, ctx.child(name)) for name, member in layer._modules.items()]
    outs = [name for name, _ in converted]
    out_value = layer(value)  # xpnn's merge, with its shape checks
    if len(outs) == 1:
        return outs[0], out_value
    if layer.merge == "sum":
        return ctx.node("Sum", outs), out_value
    return ctx.node("Concat", outs, axis=int(layer.dim)), out_value


def _no_forward(ctx, layer, x, value):
    raise ctx.unsupported(layer, "it holds modules but has no forward of its own, so there is no order to export; "
                                 "use nn.Sequential, or give your module a converter with xpnn.onnx.register_converter")


for _cls in (nn.ModuleList, nn.ModuleDict):
    register_converter(_cls)(_no_forward)


@register_converter(nn.Embedding)
def embedding(ctx, layer, x, value):
    raise ctx.unsupported(layer, "its input is integer indices, and xpnn.onnx.export writes models with one float32 input")


@register_converter(models.ZeroPadShortcut)
def zero_pad_shortcut(ctx, layer, x, value):
    s = layer.stride
    y = x
    if s != 1:
        big = np.iinfo(np.int64).max
        y = ctx.node("Slice", [x, ctx.int64s([0, 0], "starts"), ctx.int64s([big, big], "ends"), ctx.int64s([2, 3], "axes"),
                               ctx.int64s([s, s], "steps")])
    extra = layer.out_channels - layer.in_channels
    if extra:  # zero channels after the old ones
        y = ctx.node("Pad", [y, ctx.int64s([0, 0, 0, 0, 0, extra, 0, 0], "pads")])
    return y

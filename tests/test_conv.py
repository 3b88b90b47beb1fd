"""Conv2d: against a direct loop over output pixels, finite-difference gradients, init, parity
across backends, errors, and (when installed) torch.nn.functional.conv2d."""

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import DTypeError, ShapeError

from gradcheck import check_layer

# (input shape, out_channels, kernel, stride, padding, dilation, groups)
GRID = [
    ((2, 3, 6, 6), 4, 3, 1, 0, 1, 1),
    ((2, 3, 5, 7), 2, 3, 1, 1, 1, 1),
    ((1, 2, 7, 6), 3, (2, 3), (2, 1), (1, 0), 1, 1),
    ((2, 1, 9, 8), 2, 3, 2, 1, 2, 1),
    ((1, 4, 6, 5), 6, (3, 2), (2, 3), (0, 1), (2, 1), 2),
    ((2, 4, 5, 5), 4, 3, 1, 1, 1, 4),
    ((2, 3, 4, 3), 5, 1, 1, 0, 1, 1),
]


def pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def reference_conv2d(x, w, b, stride, padding, dilation, groups):
    """Float64 cross-correlation by four loops over (n, out channel, oh, ow)."""
    (sh, sw), (ph, pw), (dh, dw) = map(pair, (stride, padding, dilation))
    n, _, h, width = x.shape
    o, cg, kh, kw = w.shape
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    out = np.zeros((n, o, oh, ow))
    for b_ in range(n):
        for oc in range(o):
            g = oc // og
            for i in range(oh):
                for j in range(ow):
                    window = padded[b_, g * cg:(g + 1) * cg, i * sh:i * sh + dh * (kh - 1) + 1:dh, j * sw:j * sw + dw * (kw - 1) + 1:dw]
                    out[b_, oc, i, j] = np.sum(window * w[oc]) + (0.0 if b is None else b[oc])
    return out


def _conv(shape, out, k, s, p, d, g, device="cpu", dtype=None, bias=True):
    return nn.Conv2d(shape[1], out, k, stride=s, padding=p, dilation=d, groups=g, bias=bias, dtype=dtype, xp=device,
                     generator=np.random.default_rng(11))


@pytest.mark.parametrize("shape, out, k, s, p, d, g", GRID)
def test_conv2d_matches_direct_loop(backend, rng, shape, out, k, s, p, d, g):
    layer = _conv(shape, out, k, s, p, d, g, backend.device, np.float64)
    layer.bias.data = backend.asarray(rng.normal(size=out))
    x = rng.normal(size=shape)
    y = layer(backend.asarray(x))
    expected = reference_conv2d(x, xb.to_numpy(layer.weight.data), xb.to_numpy(layer.bias.data), s, p, d, g)
    assert tuple(y.shape) == expected.shape and y.dtype == backend.xp.float64
    np.testing.assert_allclose(xb.to_numpy(y), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, out, k, s, p, d, g", [GRID[1], GRID[2], GRID[3], GRID[4], GRID[5]])
def test_conv2d_gradients(backend, rng, shape, out, k, s, p, d, g):
    layer = _conv(shape, out, k, s, p, d, g)
    layer.bias.data = rng.normal(size=out).astype(np.float32)
    check_layer(layer, rng.normal(size=shape), backend, rng)


def test_conv2d_without_bias_gradients(backend, rng):
    layer = _conv((2, 2, 4, 5), 3, (2, 3), 1, (1, 0), 1, 1, bias=False)
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    check_layer(layer, rng.normal(size=(2, 2, 4, 5)), backend, rng)


def test_conv2d_weight_shape_init_and_backend_identity(backend):
    xpnn.manual_seed(5)
    on_backend = nn.Conv2d(16, 32, 3, groups=2, xp=backend.device)
    xpnn.manual_seed(5)
    on_numpy = nn.Conv2d(16, 32, 3, groups=2)
    assert on_backend.weight.shape == (32, 8, 3, 3) and on_backend.bias.shape == (32,)
    assert on_backend.weight.dtype == backend.xp.float32 and on_backend.bias.dtype == backend.xp.float32
    np.testing.assert_array_equal(xb.to_numpy(on_backend.weight.data), on_numpy.weight.data)
    assert abs(float(np.std(on_numpy.weight.data)) - np.sqrt(2 / (8 * 9))) < 0.01
    assert float(np.abs(on_numpy.bias.data).max()) == 0.0


def test_conv2d_parity_with_numpy_float32(backend, rng):
    shape, out, k, s, p, d, g = GRID[4]
    layers = [_conv(shape, out, k, s, p, d, g, dev) for dev in ("cpu", backend.device)]
    x = rng.normal(size=shape).astype(np.float32)
    up = rng.normal(size=tuple(layers[0](x).shape)).astype(np.float32)
    results = []
    for layer, be_asarray in zip(layers, (np.asarray, lambda a: backend.asarray(a, np.float32))):
        y = layer(be_asarray(x))
        gx = layer.backward(be_asarray(up))
        assert y.dtype == layer.weight.data.dtype and gx.dtype == layer.weight.data.dtype
        results.append([xb.to_numpy(a) for a in (y, gx, layer.weight.grad, layer.bias.grad)])
    for ref, got, name in zip(results[0], results[1], ("output", "input grad", "weight grad", "bias grad")):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6, err_msg=name)


def test_conv2d_gradients_accumulate(backend, rng):
    layer = _conv((2, 2, 5, 5), 3, 3, 1, 1, 1, 1, backend.device)
    x = backend.asarray(rng.normal(size=(2, 2, 5, 5)), np.float32)
    up = backend.asarray(np.ones((2, 3, 5, 5)), np.float32)
    layer(x)
    layer.backward(up)
    first = xb.to_numpy(layer.weight.grad).copy()
    layer(x)
    layer.backward(up)
    np.testing.assert_allclose(xb.to_numpy(layer.weight.grad), 2 * first, rtol=1e-6)


def test_conv2d_matches_torch(rng):
    torch = pytest.importorskip("torch")
    for shape, out, k, s, p, d, g in GRID:
        layer = _conv(shape, out, k, s, p, d, g, dtype=np.float64)
        layer.bias.data = rng.normal(size=out)
        x = rng.normal(size=shape)
        up = rng.normal(size=tuple(layer(x).shape))
        gx = layer.backward(up)
        tx = torch.tensor(x, requires_grad=True)
        tw = torch.tensor(layer.weight.data, requires_grad=True)
        tb = torch.tensor(layer.bias.data, requires_grad=True)
        ty = torch.nn.functional.conv2d(tx, tw, tb, stride=s, padding=p, dilation=d, groups=g)
        ty.backward(torch.from_numpy(up))
        np.testing.assert_allclose(layer(x), ty.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.weight.grad, tw.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.bias.grad, tb.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_conv2d_repr_like_pytorch():
    assert repr(nn.Conv2d(1, 8, 3, padding=1)) == "Conv2d(1, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"
    assert repr(nn.Conv2d(4, 8, (3, 5), stride=2, dilation=2, groups=2, bias=False)) == (
        "Conv2d(4, 8, kernel_size=(3, 5), stride=(2, 2), dilation=(2, 2), groups=2, bias=False)"
    )


def test_conv2d_rejects_non_4d(backend):
    layer = nn.Conv2d(1, 8, 3, xp=backend.device)
    with pytest.raises(ShapeError, match=r"Conv2d\(1, 8, kernel_size=\(3, 3\)\): expected a 4-D \(N, C, H, W\) input, got shape \(2, 28, 28\)"):
        layer(backend.asarray(np.zeros((2, 28, 28)), np.float32))


def test_conv2d_rejects_wrong_channel_count(backend):
    layer = nn.Conv2d(3, 8, 3, xp=backend.device)
    with pytest.raises(ShapeError, match=r"Conv2d\(3, 8, kernel_size=\(3, 3\)\): expected input of shape \(N, 3, H, W\), got \(2, 1, 28, 28\)"):
        layer(backend.asarray(np.zeros((2, 1, 28, 28)), np.float32))


def test_conv2d_rejects_kernel_larger_than_padded_input(backend):
    layer = nn.Conv2d(1, 2, 3, padding=1, dilation=3, xp=backend.device)
    with pytest.raises(ShapeError, match=r"Conv2d\(1, 2, kernel_size=\(3, 3\)\): kernel of size \(7, 7\) \(dilated\) is larger than "
                                          r"the padded input \(6, 12\) \(input shape \(1, 1, 4, 10\), padding \(1, 1\)\)"):
        layer(backend.asarray(np.zeros((1, 1, 4, 10)), np.float32))


def test_conv2d_rejects_channels_not_divisible_by_groups():
    with pytest.raises(ValueError, match=r"Conv2d: expected in_channels and out_channels divisible by groups=3, got in_channels=4, out_channels=6"):
        nn.Conv2d(4, 6, 3, groups=3)
    with pytest.raises(ValueError, match=r"Conv2d: expected in_channels and out_channels divisible by groups=2, got in_channels=4, out_channels=5"):
        nn.Conv2d(4, 5, 3, groups=2)


def test_conv2d_rejects_bad_geometry():
    with pytest.raises(ValueError, match=r"Conv2d: expected stride to be a positive int or a pair of them, got 0"):
        nn.Conv2d(1, 2, 3, stride=0)
    with pytest.raises(ValueError, match=r"Conv2d: expected padding to be a non-negative int or a pair of them, got \(1, -1\)"):
        nn.Conv2d(1, 2, 3, padding=(1, -1))


def test_conv2d_rejects_float64_into_float32(backend):
    layer = nn.Conv2d(1, 2, 3, xp=backend.device)
    with pytest.raises(DTypeError, match=r"Conv2d\(1, 2, kernel_size=\(3, 3\)\): expected dtype float32, got float64"):
        layer(backend.asarray(np.zeros((1, 1, 5, 5)), np.float64))


def test_conv2d_backward_params_gives_the_same_parameter_gradients(backend, rng):
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, groups=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 5, 2)).to(backend.device)
    x = backend.asarray(rng.normal(size=(2, 2, 4, 5)), np.float32)
    up = backend.asarray(rng.normal(size=(2, 2)), np.float32)
    grads = []
    for method in ("backward", "backward_params"):
        model.zero_grad()
        model(x)
        result = getattr(model, method)(up)
        assert (result is None) == (method == "backward_params")
        grads.append([xb.to_numpy(p.grad).copy() for p in model.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_conv2d_output_is_batch_last_and_chains_through_pooling(rng):
    """On NumPy a Conv2d output is an NCHW view of a (C, H, W, N) buffer; ReLU and MaxPool2d keep
    that memory order, so the next Conv2d reads its windows without reordering the image first."""
    model = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3))
    x = rng.normal(size=(3, 2, 8, 8)).astype(np.float32)
    h = reference = x
    for layer in model:
        h = layer(h)
        assert h.transpose(1, 2, 3, 0).flags.c_contiguous, type(layer).__name__
        reference = np.ascontiguousarray(layer(reference))  # the same layer, fed NCHW-contiguous
        np.testing.assert_allclose(h, reference, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("groups, rows, outs, pixels", [(1, 25, 6, 10_000), (2, 9, 4, 70_000), (1, 150, 16, 5_000), (1, 9, 8, 100)])
def test_weight_gradient_in_pixel_pieces_equals_one_product(rng, groups, rows, outs, pixels):
    """Thin NumPy weight gradients are summed over pixel pieces (the first two cases); the sum
    equals the whole product, whatever the number of groups, in float64."""
    from xpnn.ops.conv import weight_gradient

    cols = rng.normal(size=(groups, rows, pixels))
    grad = rng.normal(size=(groups, outs, pixels))
    got = weight_gradient(np, cols, grad)
    assert got.shape == (groups, rows, outs)
    np.testing.assert_allclose(got, cols @ grad.transpose(0, 2, 1), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("shape, out, k, s, p, d, g", GRID + [((3, 2, 11, 9), 3, 3, 1, 1, 1, 1)])
@pytest.mark.parametrize("piece_bytes", [1, 8000])
def test_conv2d_in_row_pieces_equals_one_window_matrix(monkeypatch, rng, shape, out, k, s, p, d, g, piece_bytes):
    """On NumPy, a Conv2d with few outputs unfolds its windows a few output rows at a time (one
    row per piece with ``piece_bytes`` = 1; several rows, the last piece shorter, with 8000 on the
    last shape): forward, input and parameter gradients equal those of one whole window matrix."""
    from xpnn.ops import conv

    x = rng.normal(size=shape)
    layer = _conv(shape, out, k, s, p, d, g, dtype=np.float64)
    layer.bias.data = rng.normal(size=out)
    grad = rng.normal(size=layer(x).shape)
    results = {}
    monkeypatch.setattr(conv, "DIRECT_MAX_OUTPUTS", 0)
    for name, max_outputs in (("whole", 0), ("pieces", out)):
        monkeypatch.setattr(conv, "STREAM_MAX_OUTPUTS", max_outputs)
        monkeypatch.setattr(conv, "STREAM_PIECE_BYTES", piece_bytes)
        layer.zero_grad()
        y = layer(x)
        results[name] = (y.copy(), layer.backward(grad).copy(), layer.weight.grad.copy(), layer.bias.grad.copy())
        pieces = [stop - start for start, stop, _ in layer._windows.pieces()]
        assert sum(pieces) == y.size // out
        if name == "whole" or isinstance(layer._windows, conv.PointwiseWindows):  # a 1x1 layer's windows are its input
            assert len(pieces) == 1
        elif piece_bytes == 1:
            assert len(pieces) == y.shape[2]  # one output row each
    for whole, pieces in zip(*results.values()):
        np.testing.assert_allclose(pieces, whole, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results["pieces"][0], reference_conv2d(x, layer.weight.data, layer.bias.data, s, p, d, g), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("n, c, o, h, w, kernel, padding", [
    (1, 1, 1, 3, 3, (3, 3), (0, 0)), (2, 1, 6, 9, 8, (5, 5), (2, 2)), (3, 3, 8, 7, 6, (3, 2), (1, 0)),
    (2, 2, 4, 5, 5, (1, 1), (0, 0)), (5, 2, 3, 6, 9, (1, 4), (0, 1)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_direct_convolution_equals_the_window_matrix_and_its_portable_twin(rng, n, c, o, h, w, kernel, padding, dtype):
    """DirectWindows (the door for few-output stride-1 layers on NumPy): the Numba forward and
    weight gradient against the portable versions run on array_api_strict and against the whole
    window matrix; the input gradient is the window matrices' own."""
    import array_api_strict

    from xpnn.ops import conv
    from xpnn.ops.windows import conv_output_size

    out_size = conv_output_size((h, w), kernel, 1, padding)
    geometry = (kernel, (1, 1), padding, (1, 1), out_size)
    x = rng.normal(size=(n, c, h, w)).astype(dtype)
    weight = rng.normal(size=(1, o, c * kernel[0] * kernel[1])).astype(dtype)
    bias = rng.normal(size=o).astype(dtype)
    grad = rng.normal(size=(1, o, out_size[0] * out_size[1] * n)).astype(dtype)
    windows = conv.conv_windows(x, *geometry, 1, o)
    if kernel == (1, 1) and padding == (0, 0):  # the door takes the input itself as its windows
        assert isinstance(windows, conv.PointwiseWindows)
        windows = conv.DirectWindows(x, kernel, padding, out_size)
    assert isinstance(windows, conv.DirectWindows)
    matrix = conv.WindowMatrix(x, *geometry, 1)
    strict = array_api_strict.asarray
    portable = conv.DirectWindows(strict(x), kernel, padding, out_size)
    tol = dict(rtol=2e-5, atol=2e-5) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-12)
    y = windows.matmul(weight, bias)
    np.testing.assert_allclose(y, matrix.matmul(weight, bias), **tol)
    np.testing.assert_allclose(np.asarray(portable.matmul(strict(weight), strict(bias))), y, **tol)
    np.testing.assert_allclose(windows.matmul(weight), matrix.matmul(weight), **tol)
    grad_w, grad_x = windows.gradients(weight, grad, True)
    np.testing.assert_allclose(grad_w, matrix.weight_gradient(grad), **tol)
    np.testing.assert_allclose(np.asarray(portable.weight_gradient(strict(grad))), grad_w, **tol)
    # the input gradient is the adjoint of the (bias-free) forward: <conv(x), g> = <x, grad_x>
    x_batch_last = np.moveaxis(x, 0, -1)
    assert np.isclose(np.sum(windows.matmul(weight) * grad), np.sum(x_batch_last * grad_x), rtol=1e-4 if dtype == np.float32 else 1e-11)


def test_only_few_output_stride_one_layers_convolve_directly():
    """The door: DirectWindows for <= DIRECT_MAX_OUTPUTS outputs (on several xpnn threads also
    <= DIRECT_THREADED_MAX_INPUTS inputs and <= DIRECT_THREADED_MAX_OUTPUTS outputs), stride 1,
    undilated, one group, float32/64 on NumPy; streamed windows for other few-output layers; the
    window matrix otherwise."""
    from xpnn.ops import conv

    def kind(x, out, stride=1, dilation=1, groups=1):
        layer = nn.Conv2d(x.shape[1], out, 3, stride=stride, dilation=dilation, padding=1, groups=groups, dtype=x.dtype.name)
        layer(x)
        return type(layer._windows).__name__

    x = np.zeros((2, 2, 8, 8), dtype=np.float32)
    assert kind(x, conv.DIRECT_MAX_OUTPUTS) == "DirectWindows"
    assert kind(x.astype(np.float64), 1) == "DirectWindows"
    assert kind(x, conv.DIRECT_MAX_OUTPUTS + 1) == "WindowMatrix"
    assert kind(x, 4, stride=2) == "StreamedWindows"
    assert kind(x, 4, dilation=2) == "StreamedWindows"
    assert kind(x, 4, groups=2) == "StreamedWindows"
    assert kind(x.astype(np.float16), 4) == "StreamedWindows"
    # on several xpnn threads, also few inputs with up to DIRECT_THREADED_MAX_OUTPUTS outputs
    wide_in = np.zeros((2, conv.DIRECT_THREADED_MAX_INPUTS + 1, 8, 8), dtype=np.float32)
    with xpnn.threads.parallel(2):
        assert kind(x, conv.DIRECT_THREADED_MAX_OUTPUTS) == "DirectWindows"
        assert kind(x, conv.DIRECT_THREADED_MAX_OUTPUTS + 1) == "WindowMatrix"
        assert kind(wide_in, conv.DIRECT_MAX_OUTPUTS + 1) == "WindowMatrix"
        assert kind(x, 12, stride=2) == "WindowMatrix"


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("batch_last", [True, False])
def test_pointwise_windows_are_the_input_itself_and_equal_the_window_matrix(backend, rng, groups, batch_last):
    """A 1x1, stride-1, unpadded convolution (PointwiseWindows, on every namespace): the window
    matrix is the batch-last input without a copy when the input is laid out so (else one copy),
    and the forward (with and without bias), weight gradient and input gradient equal the
    window matrix's (im2col and col2im)."""
    from xpnn.ops import conv

    memory = rng.normal(size=(4, 5, 3, 2))  # (C, H, W, N)
    x_np = memory.transpose(3, 0, 1, 2) if batch_last else np.ascontiguousarray(memory.transpose(3, 0, 1, 2))
    x = x_np if backend.name == "numpy" else backend.asarray(x_np)
    geometry = ((1, 1), (1, 1), (0, 0), (1, 1), (5, 3))
    windows = conv.conv_windows(x, *geometry, groups, 6 // groups)
    assert isinstance(windows, conv.PointwiseWindows)
    if backend.name == "numpy" and batch_last:
        assert np.shares_memory(windows.cols, x_np)
    reference = conv.WindowMatrix(x_np, *geometry, groups)
    weight = rng.normal(size=(groups, 6 // groups, 4 // groups))
    bias = rng.normal(size=6)
    grad = rng.normal(size=(groups, 6 // groups, 5 * 3 * 2))
    be_weight, be_grad = backend.asarray(weight), backend.asarray(grad)

    def close(got, expected):
        np.testing.assert_allclose(xb.to_numpy(got), expected, rtol=1e-12, atol=1e-12)

    close(windows.matmul(be_weight, backend.asarray(bias)), reference.matmul(weight, bias))
    close(windows.matmul(be_weight), reference.matmul(weight))
    grad_w, grad_x = windows.gradients(be_weight, be_grad, True)
    close(grad_w, reference.weight_gradient(grad))
    close(grad_x, reference.input_gradient(weight, grad))
    assert tuple(grad_x.shape) == (4, 5, 3, 2)


def test_only_a_1x1_stride_1_unpadded_convolution_takes_the_input_as_its_windows(rng):
    from xpnn.ops import conv

    x = rng.normal(size=(2, 4, 6, 6))
    assert isinstance(conv.conv_windows(x, (1, 1), (1, 1), (0, 0), (1, 1), (6, 6), 1, 3), conv.PointwiseWindows)
    assert not isinstance(conv.conv_windows(x, (1, 1), (2, 2), (0, 0), (1, 1), (3, 3), 1, 3), conv.PointwiseWindows)
    assert not isinstance(conv.conv_windows(x, (1, 1), (1, 1), (1, 1), (1, 1), (8, 8), 1, 3), conv.PointwiseWindows)
    assert not isinstance(conv.conv_windows(x, (3, 3), (1, 1), (1, 1), (1, 1), (6, 6), 1, 3), conv.PointwiseWindows)

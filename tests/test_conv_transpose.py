"""ConvTranspose2d: Conv2d's transpose (GEMM + col2im forward, im2col + GEMM backward); against a
direct scatter loop and Conv2d's backward, finite-difference gradients, init, parity across
backends, errors, config, and (when installed) torch.nn.functional.conv_transpose2d."""

import numpy as np
import pytest

import cuda_build
import xpnn
from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ConfigError, DTypeError, ShapeError
from xpnn.kernels import cuda_launch

from gradcheck import check_layer
from test_conv1d import check_against_torch, check_parity_with_numpy
from test_cuda_kernels import host_libraries  # noqa: F401  (a fixture: the CUDA kernels built for the CPU)

# (input shape, out_channels, kernel, stride, padding, output_padding, dilation, groups): output
# padding below the stride, and at or above it where the dilation allows (rows no window reaches).
GRID = [
    ((2, 3, 4, 4), 4, 3, 1, 0, 0, 1, 1),
    ((2, 3, 4, 5), 2, 3, 2, 1, 1, 1, 1),
    ((1, 2, 3, 4), 3, (2, 3), (2, 1), (1, 0), (1, 0), 1, 1),
    ((2, 2, 3, 3), 2, 3, 1, 0, 1, 2, 1),
    ((1, 4, 3, 4), 6, (3, 2), (3, 2), (2, 1), (2, 0), (1, 2), 2),
    ((2, 4, 4, 3), 4, 3, 2, 1, 0, 2, 4),
    ((2, 3, 3, 2), 5, 1, 1, 0, 0, 1, 1),
    ((1, 2, 2, 3), 2, 2, (1, 2), 0, (2, 1), (3, 1), 1),
]


def pair(v):
    return tuple(v) if isinstance(v, tuple) else (v, v)


def reference_conv_transpose2d(x, w, b, stride, padding, output_padding, dilation, groups):
    """Float64 transposed convolution by loops: each input pixel adds its value times the kernel
    into the (padded) output at stride steps, then the padding is cropped."""
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = map(pair, (stride, padding, output_padding, dilation))
    n, c, h, width = x.shape
    _, og, kh, kw = w.shape
    oh = (h - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1
    ow = (width - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1
    out = np.zeros((n, og * groups, oh + 2 * ph, ow + 2 * pw))
    cg = c // groups
    for b_ in range(n):
        for ci in range(c):
            g = ci // cg
            for i in range(h):
                for j in range(width):
                    for ki in range(kh):
                        for kj in range(kw):
                            out[b_, g * og:(g + 1) * og, i * sh + ki * dh, j * sw + kj * dw] += x[b_, ci, i, j] * w[ci, :, ki, kj]
    out = out[:, :, ph:ph + oh, pw:pw + ow]
    return out if b is None else out + b[None, :, None, None]


def _layer(shape, out, k, s, p, op, d, g, device="cpu", dtype=None, bias=True, seed=11):
    return nn.ConvTranspose2d(shape[1], out, k, stride=s, padding=p, output_padding=op, groups=g, bias=bias, dilation=d,
                              dtype=dtype, xp=device, generator=np.random.default_rng(seed))


@pytest.mark.parametrize("shape, out, k, s, p, op, d, g", GRID)
def test_conv_transpose2d_matches_direct_loop(backend, rng, shape, out, k, s, p, op, d, g):
    layer = _layer(shape, out, k, s, p, op, d, g, backend.device, np.float64)
    layer.bias.data = backend.asarray(rng.normal(size=out))
    x = rng.normal(size=shape)
    y = layer(backend.asarray(x))
    expected = reference_conv_transpose2d(x, xb.to_numpy(layer.weight.data), xb.to_numpy(layer.bias.data), s, p, op, d, g)
    assert tuple(y.shape) == expected.shape and y.dtype == backend.xp.float64
    assert tuple(y.shape[2:]) == layer.output_size(shape[2:])
    np.testing.assert_allclose(xb.to_numpy(y), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, out, k, s, p, op, d, g", GRID)
def test_conv_transpose2d_is_the_backward_of_conv2d(backend, rng, shape, out, k, s, p, op, d, g):
    """Forward equals Conv2d's input gradient and backward Conv2d's forward, with the same weight
    (Conv2d's (out, in/g, kh, kw) is ConvTranspose2d's (in, out/g, kh, kw)), to float round-off.
    Where output_padding reaches past the stride, Conv2d has more windows than the input has
    pixels: the transpose is that of its first H x W windows."""
    layer = _layer(shape, out, k, s, p, op, d, g, backend.device, np.float64, bias=False)
    conv = nn.Conv2d(out, shape[1], k, stride=s, padding=p, dilation=d, groups=g, bias=False, dtype=np.float64, xp=backend.device)
    conv.weight.data = layer.weight.data
    x = rng.normal(size=shape)
    y = layer(backend.asarray(x))
    h, w = shape[2:]
    windows = tuple(conv(backend.asarray(rng.normal(size=tuple(y.shape)))).shape)
    x_windows = np.zeros(windows)
    x_windows[:, :, :h, :w] = x
    np.testing.assert_allclose(xb.to_numpy(y), xb.to_numpy(conv.backward(backend.asarray(x_windows))), rtol=1e-12, atol=1e-12)
    up = rng.normal(size=tuple(y.shape))
    np.testing.assert_allclose(xb.to_numpy(layer.backward(backend.asarray(up))), xb.to_numpy(conv(backend.asarray(up)))[:, :, :h, :w],
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape, out, k, s, p, op, d, g", GRID[1:6] + GRID[7:])
def test_conv_transpose2d_gradients(backend, rng, shape, out, k, s, p, op, d, g):
    layer = _layer(shape, out, k, s, p, op, d, g)
    layer.bias.data = rng.normal(size=out).astype(np.float32)
    check_layer(layer, rng.normal(size=shape), backend, rng)


def test_conv_transpose2d_without_bias_gradients(backend, rng):
    layer = _layer((2, 2, 3, 4), 3, (2, 3), 2, (1, 0), 1, 1, 1, bias=False)
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    check_layer(layer, rng.normal(size=(2, 2, 3, 4)), backend, rng)


def test_conv_transpose2d_matches_torch(rng):
    torch = pytest.importorskip("torch")
    for shape, out, k, s, p, op, d, g in GRID:
        layer = _layer(shape, out, k, s, p, op, d, g, dtype=np.float64)
        layer.bias.data = rng.normal(size=out)
        function = lambda x, w, b: torch.nn.functional.conv_transpose2d(x, w, b, s, p, op, g, d)  # noqa: E731
        check_against_torch(torch, layer, function, rng.normal(size=shape), rng, f"{shape} k={k} s={s} p={p} op={op} d={d} g={g}")


def test_conv_transpose2d_module_matches_torch_module_shapes():
    torch = pytest.importorskip("torch")
    ours = nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, output_padding=1, groups=2)
    theirs = torch.nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=1, output_padding=1, groups=2)
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    assert repr(ours) == repr(theirs)


def test_conv_transpose2d_weight_shape_init_and_backend_identity(backend):
    xpnn.manual_seed(5)
    on_backend = nn.ConvTranspose2d(16, 32, 3, groups=2, xp=backend.device)
    xpnn.manual_seed(5)
    on_numpy = nn.ConvTranspose2d(16, 32, 3, groups=2)
    assert on_backend.weight.shape == (16, 16, 3, 3) and on_backend.bias.shape == (32,)
    assert on_backend.weight.dtype == backend.xp.float32 and on_backend.bias.dtype == backend.xp.float32
    np.testing.assert_array_equal(xb.to_numpy(on_backend.weight.data), on_numpy.weight.data)
    assert abs(float(np.std(on_numpy.weight.data)) - np.sqrt(2 / (16 * 9))) < 0.01  # PyTorch's fan_in: out/groups*kh*kw
    assert float(np.abs(on_numpy.bias.data).max()) == 0.0


def test_conv_transpose2d_parity_with_numpy_float32(backend, rng):
    shape, out, k, s, p, op, d, g = GRID[4]
    check_parity_with_numpy(lambda dev: _layer(shape, out, k, s, p, op, d, g, dev), rng.normal(size=shape).astype(np.float32), backend, rng,
                            atol=1e-5)


def test_conv_transpose2d_backward_params_and_gradients_accumulate(backend, rng):
    layer = _layer((2, 2, 3, 3), 3, 3, 2, 1, 1, 1, 1, backend.device)
    x = backend.asarray(rng.normal(size=(2, 2, 3, 3)), np.float32)
    up = backend.asarray(rng.normal(size=(2, 3, 6, 6)), np.float32)
    layer(x)
    assert layer.backward_params(up) is None
    first = [xb.to_numpy(p.grad).copy() for p in layer.parameters()]
    layer.zero_grad()
    layer(x)
    layer.backward(up)
    layer(x)
    layer.backward(up)
    for a, b in zip(first, layer.parameters()):
        np.testing.assert_allclose(xb.to_numpy(b.grad), 2 * a, rtol=1e-5, atol=1e-6)


def test_conv_transpose2d_upsamples_inside_a_model(backend, rng):
    """An encoder-decoder: Conv2d down by 2, ConvTranspose2d back up to the input size, gradients
    through both (the transposed layer reads the Conv2d's batch-last output)."""
    model = nn.Sequential(nn.Conv2d(2, 4, 3, stride=2, padding=1), nn.ReLU(),
                          nn.ConvTranspose2d(4, 2, 3, stride=2, padding=1, output_padding=1)).to(backend.device)
    x = backend.asarray(rng.normal(size=(3, 2, 8, 8)), np.float32)
    y = model(x)
    assert tuple(y.shape) == (3, 2, 8, 8)
    assert tuple(model.backward(y).shape) == (3, 2, 8, 8)


def test_conv_transpose2d_repr_like_pytorch():
    assert repr(nn.ConvTranspose2d(1, 8, 3, padding=1)) == "ConvTranspose2d(1, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))"
    assert repr(nn.ConvTranspose2d(4, 8, (3, 5), stride=2, output_padding=1, dilation=2, groups=2, bias=False)) == (
        "ConvTranspose2d(4, 8, kernel_size=(3, 5), stride=(2, 2), dilation=(2, 2), output_padding=(1, 1), groups=2, bias=False)"
    )


def test_conv_transpose2d_config_round_trip():
    layer = nn.ConvTranspose2d(4, 6, (3, 2), stride=2, padding=(1, 0), output_padding=1, groups=2, bias=False, dilation=1, dtype="float64")
    config = layer.get_config()
    assert config["class"] == "ConvTranspose2d" and config["args"]["output_padding"] == 1 and config["args"]["kernel_size"] == [3, 2]
    rebuilt = nn.from_config(config)
    assert repr(rebuilt) == repr(layer) and rebuilt.weight.shape == (4, 3, 3, 2) and rebuilt.weight.dtype == np.float64


def test_conv_transpose2d_rejects_impossible_output_padding():
    with pytest.raises(ConfigError, match=r"ConvTranspose2d: expected output_padding smaller than stride or dilation on each axis, "
                                          r"got output_padding=\(2, 2\), stride=\(2, 2\), dilation=\(1, 1\)"):
        nn.ConvTranspose2d(1, 2, 3, stride=2, output_padding=2)
    with pytest.raises(ConfigError, match=r"output_padding=\(0, 1\), stride=\(1, 1\), dilation=\(2, 1\)"):
        nn.ConvTranspose2d(1, 2, 3, output_padding=(0, 1), dilation=(2, 1))
    with pytest.raises(ConfigError, match=r"ConvTranspose2d: expected output_padding to be a non-negative int or a pair of them, got -1"):
        nn.ConvTranspose2d(1, 2, 3, output_padding=-1)


def test_conv_transpose2d_rejects_non_positive_output_size(backend):
    layer = nn.ConvTranspose2d(1, 2, 1, padding=1, xp=backend.device)
    with pytest.raises(ShapeError, match=r"ConvTranspose2d\(1, 2, kernel_size=\(1, 1\)\): expected an input whose output size is positive, "
                                          r"got output size \(1, -1\) for input shape \(1, 1, 3, 1\)"):
        layer(backend.asarray(np.zeros((1, 1, 3, 1)), np.float32))


def test_conv_transpose2d_rejects_bad_inputs(backend):
    layer = nn.ConvTranspose2d(3, 8, 3, xp=backend.device)
    with pytest.raises(ShapeError, match=r"ConvTranspose2d\(3, 8, kernel_size=\(3, 3\)\): expected a 4-D \(N, C, H, W\) input, got shape \(3, 5, 5\)"):
        layer(backend.asarray(np.zeros((3, 5, 5)), np.float32))
    with pytest.raises(ShapeError, match=r"ConvTranspose2d\(3, 8, kernel_size=\(3, 3\)\): expected input of shape \(N, 3, H, W\), got \(2, 1, 5, 5\)"):
        layer(backend.asarray(np.zeros((2, 1, 5, 5)), np.float32))
    with pytest.raises(DTypeError, match=r"ConvTranspose2d\(3, 8, kernel_size=\(3, 3\)\): expected dtype float32, got float64"):
        layer(backend.asarray(np.zeros((2, 3, 5, 5)), np.float64))


def test_conv_transpose2d_rejects_bad_arguments():
    with pytest.raises(ConfigError, match=r"ConvTranspose2d: expected in_channels and out_channels divisible by groups=3, got in_channels=4, out_channels=6"):
        nn.ConvTranspose2d(4, 6, 3, groups=3)
    with pytest.raises(ConfigError, match=r"ConvTranspose2d: expected stride to be a positive int or a pair of them, got 0"):
        nn.ConvTranspose2d(1, 2, 3, stride=0)
    with pytest.raises(ConfigError, match=r"ConvTranspose2d: expected positive in_channels, out_channels and groups, got in_channels=1, out_channels=0"):
        nn.ConvTranspose2d(1, 0, 3)


@pytest.mark.parametrize("make, shape", [
    (lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), (2, 4, 5, 4)),
    (lambda: nn.ConvTranspose2d(2, 3, 3, padding=1, output_padding=1, dilation=2), (2, 2, 4, 4)),  # rows no window reaches
    (lambda: nn.Sequential(nn.Conv1d(2, 4, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool1d(3, 2, 1), nn.AvgPool1d(2)), (3, 2, 17)),
], ids=["transpose", "transpose-output-padding", "conv1d-pools"])
def test_new_window_layers_through_the_cuda_paths_match_numpy(monkeypatch, rng, host_libraries, make, shape):
    """The CUDA kernels (run on the CPU, NumPy arrays standing in for CuPy's) give what the NumPy
    paths give, forward and every gradient: the new layers reach them through Conv2d's doors."""
    x = rng.normal(size=shape).astype(np.float32)
    results = {}
    for path in ("numba", "cuda"):
        host = cuda_build.HostKernels(host_libraries, max_blocks=2)
        with monkeypatch.context() as patch:
            if path == "cuda":
                patch.setattr(xb, "fast_path", lambda xp: "cuda")
                patch.setattr(cuda_launch, "default_kernels", lambda: host)
            xpnn.manual_seed(0)
            layer = make()
            y = layer(x)
            up = np.random.default_rng(7).normal(size=y.shape).astype(np.float32)
            gx = layer.backward(up)
        results[path] = [y, gx] + [p.grad.copy() for p in layer.parameters()]
        launched = {launch[0] for launch in host.launches}
        assert {"xpnn_im2col", "xpnn_col2im"} <= launched if path == "cuda" else not launched
    for got, ref in zip(results["cuda"], results["numba"]):
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)

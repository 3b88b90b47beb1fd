"""nn.Sequential's fusion of a ReLU into the layer before it (``nn.module._forward_fusing_relu``):
a Conv2d on NumPy's direct or Winograd path, or a batch norm's compiled training pass, applies
the ReLU in its own last pass and the ReLU adopts its mask. Forward, input and parameter
gradients equal the layers run one by one (a negative zero may come out as +0); where the layer
cannot fuse, or the next layer is not exactly nn.ReLU, nothing changes; the compiled epilogue
equals the ReLU's arithmetic and its portable twin."""

import array_api_strict
import numpy as np
import pytest

import xpnn
from xpnn import nn, ops, threads
from xpnn.ops import conv, winograd

# (the layers before the ReLU, input shape, the windows class the convolution takes, its tile)
CASES = {
    "direct": (lambda: [nn.Conv2d(1, 8, 3, padding=1)], (3, 1, 9, 7), conv.DirectWindows, None),
    "winograd4": (lambda: [nn.Conv2d(16, 16, 3, padding=1)], (130, 16, 8, 8), winograd.WinogradWindows, 4),
    "winograd4, cropped tiles": (lambda: [nn.Conv2d(16, 16, 3, padding=1)], (147, 16, 7, 8), winograd.WinogradWindows, 4),
    "winograd2": (lambda: [nn.Conv2d(16, 16, 3, padding=1)], (230, 16, 6, 6), winograd.WinogradWindows, 2),
    "batchnorm, batch-first": (lambda: [nn.BatchNorm2d(4)], (6, 4, 6, 6), None, None),
    "batchnorm after a convolution, batch-last": (lambda: [nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4)], (6, 2, 6, 6), None, None),
    "batchnorm1d": (lambda: [nn.BatchNorm1d(5)], (8, 5, 4), None, None),
}


def _one_by_one(model, x, grad):
    for layer in model:
        x = layer(x)
    for layer in reversed(list(model)):
        grad = layer.backward(grad)
    return x, grad


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("count", [1, 2])
def test_sequential_fuses_the_relu_into_the_layer_before_it(monkeypatch, rng, case, dtype, count):
    """Every loop split over the threads when there are two (the masks sliced as the outputs)."""
    make, shape, windows_class, tile = CASES[case]
    monkeypatch.setattr(threads, "SPLIT_MIN_ELEMENTS", 1)
    xpnn.manual_seed(3)
    fused = nn.Sequential(*make(), nn.ReLU()).to(dtype=dtype)
    xpnn.manual_seed(3)
    apart = nn.Sequential(*make(), nn.ReLU()).to(dtype=dtype)
    x = rng.normal(size=shape).astype(dtype)
    grad = rng.normal(size=apart(x).shape).astype(dtype)
    with threads.parallel(count):
        expected, expected_grad = _one_by_one(apart, x, grad)
        calls = []
        relu = ops.relu
        monkeypatch.setattr(ops, "relu", lambda a: calls.append(a) or relu(a))
        y = fused(x)
        got_grad = fused.backward(grad)
    assert calls == []  # the ReLU computed nothing: the layer before applied it
    if windows_class is not None:
        assert type(fused[0]._windows) is windows_class and getattr(fused[0]._windows, "m", None) == tile
    np.testing.assert_array_equal(y, expected)
    assert y.strides == expected.strides
    np.testing.assert_array_equal(got_grad, expected_grad)
    for mine, theirs in zip(fused.parameters(), apart.parameters()):
        np.testing.assert_array_equal(mine.grad, theirs.grad)


def test_the_fused_first_layer_gives_the_same_parameter_gradients_through_backward_params(rng):
    xpnn.manual_seed(1)
    fused = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 5, 3))
    xpnn.manual_seed(1)
    apart = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 5 * 5, 3))
    x = rng.normal(size=(4, 1, 5, 5)).astype(np.float32)
    grad = rng.normal(size=(4, 3)).astype(np.float32)
    fused(x)
    fused.backward_params(grad)
    _one_by_one(apart, x, grad)
    for mine, theirs in zip(fused.parameters(), apart.parameters()):
        np.testing.assert_array_equal(mine.grad, theirs.grad)
    with nn.no_grad():  # inference fuses too, and keeps nothing for backward
        y = fused(x)
    np.testing.assert_array_equal(y, apart(x))
    assert fused[1]._backward is None


class _MyReLU(nn.ReLU):
    """A subclass: its forward may differ, so it is never fused."""


class _ShiftedConv(nn.Conv2d):
    """A user's convolution whose forward changes the output after Conv2d's: never fused."""

    def forward(self, x):
        return super().forward(x) - 0.5


@pytest.mark.parametrize("layers, note", [
    (lambda: [nn.Conv2d(6, 16, 5), nn.ReLU()], "the window matrix: no compiled epilogue"),
    (lambda: [nn.Conv2d(1, 8, 3, padding=1), nn.LeakyReLU()], "not a ReLU"),
    (lambda: [nn.Conv2d(1, 8, 3, padding=1), _MyReLU()], "a ReLU subclass"),
    (lambda: [nn.Conv2d(1, 8, 3, padding=1), nn.Identity(), nn.ReLU()], "not next to each other"),
    (lambda: [nn.BatchNorm2d(1).eval(), nn.ReLU()], "batch norm with running statistics"),
    (lambda: [_ShiftedConv(1, 8, 3, padding=1), nn.ReLU()], "a subclass with a forward of its own"),
])
def test_no_fusion_where_the_layer_cannot_apply_it_or_the_next_layer_is_not_relu(monkeypatch, rng, layers, note):
    model = nn.Sequential(*layers())
    x = rng.normal(size=(2, getattr(model[0], "in_channels", 1), 9, 9)).astype(np.float32)
    expected, _ = _one_by_one(model, x, np.ones(model(x).shape, np.float32))
    monkeypatch.setattr(nn.Sequential, "fuse_relu", False)
    np.testing.assert_array_equal(model(x), expected)
    monkeypatch.undo()
    relu_calls = []
    relu = ops.relu
    monkeypatch.setattr(ops, "relu", lambda a: relu_calls.append(a) or relu(a))
    np.testing.assert_array_equal(model(x), expected)
    assert len(relu_calls) == sum(type(layer) in (nn.ReLU, _MyReLU) for layer in model), note
    assert np.all(model(x) >= 0) or type(model[-1]) is nn.LeakyReLU


def test_a_mask_left_by_an_interrupted_fusion_is_never_adopted_for_another_input(rng):
    """A mask the ReLU was handed but never used (the forward after it raised) is dropped at its
    next forward, and one of another shape is ignored: the ReLU then computes."""
    relu = nn.ReLU()
    x = rng.normal(size=(2, 3)).astype(np.float32)
    relu._adopt_rectified(np.ones((4, 5), dtype=np.uint8))
    np.testing.assert_array_equal(relu(x), np.maximum(x, 0))
    assert relu._given_mask is None
    np.testing.assert_array_equal(relu(x), np.maximum(x, 0))


def test_other_namespaces_do_not_fuse(rng):
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU()).to("array_api_strict")
    x = array_api_strict.asarray(rng.normal(size=(2, 1, 5, 5)).astype(np.float32))
    y = model(x)
    assert model[1]._backward.__qualname__.startswith("relu_portable")
    np.testing.assert_array_equal(np.asarray(y), np.maximum(np.asarray(model[0](x)), 0))


@pytest.mark.parametrize("m", [2, 4])
def test_the_rectifying_output_transform_equals_its_portable_twin_and_the_relu(rng, m):
    """Winograd's output transform with a mask: the Numba loop against the portable version on
    array_api_strict (bit-equal for m = 2, round-off for m = 4), both equal to the transform
    then ReLU's maximum, the mask marking the positive outputs, NaN kept."""
    from xpnn.kernels import numba_winograd, numba_winograd4

    compiled = {2: numba_winograd, 4: numba_winograd4}[m]
    products = rng.normal(size=((m + 2) ** 2, 3, 2, 2, 5)).astype(np.float32)
    products[0, 0, 0, 0, 0] = np.nan
    bias = rng.normal(size=3).astype(np.float32)
    shape = (3, 2 * m - 1, 2 * m - 1, 5)
    plain, out, mask = np.empty(shape, np.float32), np.empty(shape, np.float32), np.empty(shape, np.uint8)
    compiled.output_tiles(products, bias, plain, (0, 0))
    compiled.output_tiles(products, bias, out, (0, 0), mask)
    np.testing.assert_array_equal(out, np.maximum(plain, 0))
    np.testing.assert_array_equal(mask, plain > 0)
    assert np.isnan(out[0, 0, 0, 0])
    strict = array_api_strict.asarray
    twin_out, twin_mask = strict(np.empty(shape, np.float32)), strict(np.empty(shape, np.uint8))
    winograd.output_tiles_portable(strict(products), strict(bias), twin_out, (0, 0), twin_mask, m=m)
    if m == 2:
        np.testing.assert_array_equal(out, np.asarray(twin_out))
    else:
        np.testing.assert_allclose(out, np.asarray(twin_out), rtol=2e-6, atol=2e-6 * np.nanmax(np.abs(out)))
    np.testing.assert_array_equal(np.asarray(twin_mask) == 1, np.asarray(twin_out) > 0)


def test_the_rectify_epilogue_is_the_compiled_relus_arithmetic():
    from xpnn.kernels import numba_elementwise

    values = np.array([1.5, -2.0, 0.0, -0.0, np.nan, np.inf, -np.inf, 3e-45], dtype=np.float32)
    relu, relu_mask = numba_elementwise.relu(values)
    rectified, mask = values.copy(), np.empty(values.shape, np.uint8)
    numba_elementwise.rectify(rectified, mask)
    np.testing.assert_array_equal(rectified, relu)
    assert np.array_equal(np.signbit(rectified), np.signbit(relu))
    np.testing.assert_array_equal(mask, relu_mask)

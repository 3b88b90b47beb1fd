"""Every CUDA kernel, checked on machines without a GPU: each source compiles with nvcc for sm_80
and sm_90 (warnings as errors), and each kernel runs on the CPU (the same source built with g++
against cuda_host/host_cuda.h, every block and thread of the launch run one after another)
through the same host-side wrappers the GPU uses, compared with the portable path over the
shapes the portable tests use. A full-size grid and a 2-block grid (each thread striding over many
elements) must give the same results."""

import numpy as np
import pytest

import cuda_build
import xpnn
from test_functional_conv import GEOMETRIES
from xpnn import backend as xb
from xpnn import nn, optim
from xpnn.kernels import cuda_elementwise, cuda_launch, cuda_sources, cuda_windows
from xpnn.ops import activation, loss, pooling, updates
from xpnn.ops import windows as W

DTYPES = [np.float32, np.float64]

# The portable im2col tests' geometries, and an empty batch.
CONV_GEOMETRIES = GEOMETRIES + [((0, 2, 5, 5), 3, 1, 1, 1)]

# Pooling windows: tiling, overlapping, padded (at most half the kernel), dilated, stride that
# does not divide the input, and an empty batch.
POOL_GEOMETRIES = [
    ((2, 3, 6, 6), 2, 2, 0, 1),
    ((2, 2, 7, 5), 3, 2, 1, 1),
    ((1, 2, 5, 8), (2, 3), (1, 2), (1, 0), 1),
    ((2, 1, 9, 7), (3, 2), (3, 2), (1, 1), 1),
    ((3, 2, 5, 5), 3, 1, 1, 1),
    ((2, 1, 9, 9), 3, 2, 1, 2),
    ((1, 2, 4, 4), 1, 2, 0, 1),
    ((0, 2, 4, 4), 2, 2, 0, 1),
]

LAYOUTS = ["nchw", "batch-last", "strided"]


@pytest.fixture(scope="session")
def host_libraries(tmp_path_factory):
    if not cuda_build.find_gxx():
        pytest.skip("g++ not found: the CUDA kernels cannot be built for the CPU")
    directory = tmp_path_factory.mktemp("cuda_host")
    return {source: cuda_build.gxx_library(source, directory) for source in cuda_sources.SOURCES}


@pytest.fixture(params=[cuda_launch.MAX_BLOCKS, 2], ids=["full-grid", "2-blocks"])
def kernels(host_libraries, request):
    return cuda_build.HostKernels(host_libraries, max_blocks=request.param)


def in_layout(x, layout):
    """``x`` (NCHW) as a batch-last view, a strided view (every other column of a wider array),
    or itself."""
    if layout == "batch-last":
        return np.ascontiguousarray(x.transpose(1, 2, 3, 0)).transpose(3, 0, 1, 2)
    if layout == "strided":
        wide = np.zeros((*x.shape[:3], 2 * x.shape[3]), dtype=x.dtype)
        wide[..., ::2] = x
        return wide[..., ::2]
    return x


# ---- compiled by nvcc ---------------------------------------------------------------------------


@pytest.mark.parametrize("arch", cuda_build.NVCC_ARCHS)
@pytest.mark.parametrize("source", cuda_sources.SOURCES)
def test_nvcc_compiles_every_kernel_without_warnings(tmp_path, source, arch):
    nvcc = cuda_build.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (on PATH or in /usr/local/cuda/bin): CUDA sources not compiled")
    cubin = cuda_build.nvcc_cubin(nvcc, source, arch, tmp_path).read_bytes()
    for kernel in cuda_sources.kernel_names(source):
        for code in ("f", "d"):  # Itanium mangling of the float and double instantiations
            assert f"{len(kernel)}{kernel}I{code}E".encode() in cubin, f"{kernel}<{code}> missing from the {arch} cubin"


@pytest.mark.parametrize("source", cuda_sources.SOURCES)
def test_nvcc_compiles_each_source_file_as_it_is(tmp_path, source):
    """The .cu file on disk, as a reader would compile it (its #include of common.cuh found beside
    it), not only the text the loader assembles."""
    nvcc = cuda_build.find_nvcc()
    if nvcc is None:
        pytest.skip("nvcc not found (on PATH or in /usr/local/cuda/bin): CUDA sources not compiled")
    path = cuda_sources.DIRECTORY / f"{source}.cu"
    cuda_build.run_compiler([nvcc, "-cubin", "-arch=sm_90", "--std=c++14", "--Werror", "all-warnings", "-o", str(tmp_path / "out.cubin"), str(path)])


def test_every_kernel_is_found_and_has_a_test():
    names = {kernel for source in cuda_sources.SOURCES for kernel in cuda_sources.kernel_names(source)}
    assert names == set(KERNEL_TESTS), "each CUDA kernel needs a CPU test listed in KERNEL_TESTS"


# ---- run on the CPU against the portable paths --------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, k, s, p, d", CONV_GEOMETRIES)
def test_im2col_kernel_equals_portable_copies(kernels, rng, shape, k, s, p, d, dtype, layout):
    x = in_layout(rng.normal(size=shape).astype(dtype), layout)
    kernel, stride, padding, dilation, (oh, ow) = W.window_geometry(shape, k, s, p, d)
    got = cuda_windows.im2col_blocks(x, kernel, stride, padding, dilation, (oh, ow), kernels)
    want = W.im2col_rows_portable(W.padded_batch_last(x, padding), kernel, stride, dilation, (0, oh), ow, np.empty_like(got))
    assert got.dtype == dtype and got.flags.c_contiguous
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, k, s, p, d", CONV_GEOMETRIES)
def test_col2im_kernel_gathers_the_portable_sums_bit_for_bit(kernels, rng, shape, k, s, p, d, dtype):
    (kh, kw), stride, (ph, pw), dilation, (oh, ow) = W.window_geometry(shape, k, s, p, d)
    n, c, h, w = shape
    blocks = rng.normal(size=(c, kh, kw, oh, ow, n)).astype(dtype)
    want = W.col2im_image_portable(blocks, (h + 2 * ph, w + 2 * pw), stride, dilation)[:, ph:ph + h, pw:pw + w, :]
    for given in (blocks, np.asfortranarray(blocks)):  # a non-contiguous buffer is copied first
        got = cuda_windows.col2im_image(given, shape, stride, (ph, pw), dilation, kernels)
        assert got.shape == (c, h, w, n) and got.dtype == dtype
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("layout", ["nchw", "batch-last"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, k, s, p, d", POOL_GEOMETRIES)
def test_max_pool_kernels_equal_portable_path_with_ties_and_nan(kernels, rng, shape, k, s, p, d, dtype, layout):
    """First maximum among ties, the last NaN of a window takes the gradient, the output keeps the
    input's memory order; a gradient in another layout is copied into the offsets' layout."""
    values = rng.integers(0, 3, size=shape).astype(dtype)
    if values.size:
        values.reshape(-1)[[1, 7 % values.size]] = np.nan
    x = in_layout(values, layout)
    kernel, stride, padding, dilation, out = W.window_geometry(shape, k, s, p, d)
    y, backward = pooling.max_pool2d_cuda(x, kernel, stride, padding, dilation, out, kernels)
    want_y, want_backward = pooling.max_pool2d_portable(values, kernel, stride, padding, dilation, out)
    np.testing.assert_array_equal(y, want_y)
    order = pooling.memory_order(x)
    assert np.transpose(y, order).flags.c_contiguous
    up = rng.normal(size=tuple(want_y.shape)).astype(dtype)
    want_grad = want_backward(up)
    for grad in (up, in_layout(up, "batch-last"), in_layout(up, "strided")):
        got = backward(grad)
        assert got.shape == shape and got.dtype == dtype and np.transpose(got, order).flags.c_contiguous
        np.testing.assert_array_equal(got, want_grad)


@pytest.mark.filterwarnings("ignore:invalid value encountered in multiply")
@pytest.mark.parametrize("layout", ["nchw", "batch-last"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_kernels_equal_portable_path(kernels, rng, dtype, layout):
    x = rng.normal(size=(5, 3, 4, 6)).astype(dtype)
    x.reshape(-1)[:6] = [np.nan, -np.inf, np.inf, -0.0, 0.0, -1e-30]
    x = in_layout(x, layout)
    y, backward = activation.relu_cuda(x, kernels)
    want_y, want_backward = activation.relu_portable(x)
    np.testing.assert_array_equal(y, want_y)
    assert y.strides == x.strides
    up = rng.normal(size=x.shape).astype(dtype)
    up.reshape(-1)[:2] = [np.nan, np.inf]
    for grad in (in_layout(up, layout), in_layout(up, "strided")):  # the kernel, then the multiply
        np.testing.assert_array_equal(backward(grad), want_backward(grad))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows, classes", [(37, 10), (3, 1), (0, 5), (5, 1000)])
def test_softmax_cross_entropy_kernels_match_portable_path(kernels, rng, dtype, rows, classes):
    """Losses and gradients agree to the portable log-softmax's rounding at the logits' scale; an
    out-of-range label makes its row NaN on both paths."""
    z = (rng.normal(size=(rows, classes)) * 30).astype(dtype)
    labels = rng.integers(0, classes, size=rows)
    if rows >= 3:
        labels[1] = classes  # out of range
        z[2, 0] = np.nan
    losses, backward = loss.softmax_cross_entropy_cuda(z, labels, kernels)
    want_losses, want_backward = loss.softmax_cross_entropy_portable(z, labels)
    tol = 4 * float(np.spacing(np.abs(np.nan_to_num(z)).max(initial=1.0)))
    assert losses.dtype == dtype and losses.shape == (rows,)
    np.testing.assert_allclose(losses, want_losses, rtol=tol, atol=tol)
    for scale in (dtype(0.5), rng.normal(size=rows).astype(dtype)):
        got, want = backward(scale), want_backward(scale)
        assert got.dtype == dtype
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


ADAM_DECAYS = {"plain": dict(l2=0.0, decay=1.0), "l2": dict(l2=0.01, decay=1.0), "decoupled": dict(l2=0.0, decay=0.999)}


@pytest.mark.parametrize("decay", list(ADAM_DECAYS))
@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
def test_adam_kernel_equals_portable_update_bit_for_bit(kernels, rng, dtype, amsgrad, decay):
    p, g, m, v = (rng.normal(size=(70, 50)).astype(dtype) for _ in range(4))
    v = np.abs(v)
    vmax = np.abs(rng.normal(size=(70, 50)).astype(dtype)) if amsgrad else None
    fast = [None if a is None else a.copy() for a in (p, m, v, vmax)]
    slow = [None if a is None else a.copy() for a in (p, m, v, vmax)]
    consts = dict(beta1=0.9, beta2=0.999, scale=0.01, shifted_eps=1e-8, **ADAM_DECAYS[decay])
    cuda_elementwise.adam_update(fast[0], g, fast[1], fast[2], fast[3], **consts, kernels=kernels)
    updates.adam_update_portable(slow[0], g, slow[1], slow[2], slow[3], **consts)
    for a, b in zip(fast, slow):
        if a is not None:
            np.testing.assert_array_equal(a, b)


SGD_SETTINGS = {
    "plain": dict(momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False),
    "weight-decay": dict(momentum=0.0, dampening=0.0, weight_decay=0.01, nesterov=False),
    "momentum": dict(momentum=0.9, dampening=0.0, weight_decay=0.0, nesterov=False),
    "dampening": dict(momentum=0.9, dampening=0.3, weight_decay=0.01, nesterov=False),
    "nesterov": dict(momentum=0.9, dampening=0.0, weight_decay=0.01, nesterov=True),
}


@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("setting", list(SGD_SETTINGS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_sgd_kernel_equals_portable_update_bit_for_bit(kernels, rng, dtype, setting, first):
    options = SGD_SETTINGS[setting]
    p, g, buf = (rng.normal(size=(33, 17)).astype(dtype) for _ in range(3))
    with_buffer = options["momentum"] != 0
    fast = [p.copy(), buf.copy() if with_buffer else None]
    slow = [p.copy(), buf.copy() if with_buffer else None]
    cuda_elementwise.sgd_update(fast[0], g, fast[1], 0.05, **options, first=first, kernels=kernels)
    updates.sgd_update_portable(slow[0], g, slow[1], 0.05, **options, first=first)
    for a, b in zip(fast, slow):
        if a is not None:
            np.testing.assert_array_equal(a, b)


KERNEL_TESTS = {
    "xpnn_im2col": test_im2col_kernel_equals_portable_copies,
    "xpnn_col2im": test_col2im_kernel_gathers_the_portable_sums_bit_for_bit,
    "xpnn_max_pool_forward": test_max_pool_kernels_equal_portable_path_with_ties_and_nan,
    "xpnn_max_pool_backward": test_max_pool_kernels_equal_portable_path_with_ties_and_nan,
    "xpnn_relu_forward": test_relu_kernels_equal_portable_path,
    "xpnn_relu_backward": test_relu_kernels_equal_portable_path,
    "xpnn_softmax_cross_entropy_forward": test_softmax_cross_entropy_kernels_match_portable_path,
    "xpnn_softmax_cross_entropy_backward": test_softmax_cross_entropy_kernels_match_portable_path,
    "xpnn_adam": test_adam_kernel_equals_portable_update_bit_for_bit,
    "xpnn_sgd": test_sgd_kernel_equals_portable_update_bit_for_bit,
}


# ---- launch configuration and whole training steps -----------------------------------------------


def test_launch_config_covers_any_count_within_the_block_limit():
    assert cuda_launch.launch_config(0) == (0, cuda_launch.THREADS_PER_BLOCK)
    assert cuda_launch.launch_config(1) == (1, 256)
    assert cuda_launch.launch_config(257) == (2, 256)
    assert cuda_launch.launch_config(10**9) == (cuda_launch.MAX_BLOCKS, 256)
    assert cuda_launch.launch_config(10**6, max_blocks=2) == (2, 256)


def test_host_kernels_refuse_untyped_scalars(host_libraries):
    host = cuda_build.HostKernels(host_libraries, max_blocks=1)
    x = np.ones(3, dtype=np.float32)
    with pytest.raises(TypeError, match="kernel argument of type int: expected a NumPy array or a NumPy int32/int64/float32/float64 scalar"):
        cuda_launch.launch(host, "activation", "xpnn_relu_forward", x.dtype, 3, x, x, x, 3)


def _mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10))


def _seed_cnn():
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 28 * 28, 32), nn.ReLU(), nn.Linear(32, 10))


def _lenet():
    return nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 5 * 5, 32), nn.ReLU(), nn.Linear(32, 10),
    )


@pytest.mark.parametrize("build", [_mlp, _seed_cnn, _lenet], ids=["mlp", "seed-cnn", "lenet"])
def test_training_steps_through_the_cuda_paths_match_numpy(monkeypatch, rng, host_libraries, build):
    """The CUDA paths of every door (kernels run on the CPU, NumPy arrays standing in for CuPy's)
    train the MLP, the seed CNN and LeNet like the NumPy paths: losses and weights agree to float32
    round-off after three Adam steps, and every forward/backward/update kernel ran."""
    x = rng.uniform(0, 1, size=(16, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, size=16)
    results = {}
    for path in ("numba", "cuda"):
        host = cuda_build.HostKernels(host_libraries, max_blocks=cuda_launch.MAX_BLOCKS)
        with monkeypatch.context() as patch:
            if path == "cuda":
                patch.setattr(xb, "fast_path", lambda xp: "cuda")
                patch.setattr(cuda_launch, "default_kernels", lambda: host)
            xpnn.manual_seed(0)
            model = build()
            opt, loss_fn = optim.Adam(model.parameters(), lr=1e-3), nn.CrossEntropyLoss()
            losses = []
            for _ in range(3):
                losses.append(float(loss_fn(model(x), y)))
                opt.zero_grad()
                model.backward(loss_fn.backward())
                opt.step()
        results[path] = (losses, [p.data.copy() for p in model.parameters()], {launch[0] for launch in host.launches})
    np.testing.assert_allclose(results["cuda"][0], results["numba"][0], rtol=1e-5)
    for a, b in zip(results["cuda"][1], results["numba"][1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    expected = {"xpnn_relu_forward", "xpnn_relu_backward", "xpnn_softmax_cross_entropy_forward",
                "xpnn_softmax_cross_entropy_backward", "xpnn_adam"}
    if build is not _mlp:
        expected |= {"xpnn_im2col"} | ({"xpnn_col2im", "xpnn_max_pool_forward", "xpnn_max_pool_backward"} if build is _lenet else set())
    assert expected <= results["cuda"][2], expected - results["cuda"][2]
    assert not results["numba"][2]

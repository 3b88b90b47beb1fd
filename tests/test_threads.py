"""xpnn.threads: the count and BLAS's limit, the pieces, the split GEMM door and every compiled
loop split over two threads against the same loop on one (equal results), and Trainer's rule."""

import threading
import time

import numpy as np
import pytest

import xpnn
from xpnn import nn, ops, optim, threads
from xpnn.errors import ConfigError
from xpnn.ops import gemm
from xpnn.ops.winograd import WinogradWindows


def blas_counts():
    from threadpoolctl import threadpool_info

    return [info["num_threads"] for info in threadpool_info() if info.get("user_api") == "blas"]


@pytest.fixture
def two_threads(monkeypatch):
    """Two xpnn threads, every piece of work split however small it is; one thread afterwards."""
    monkeypatch.setattr(threads, "SPLIT_MIN_ELEMENTS", 1)
    monkeypatch.setattr(gemm, "SPLIT_MIN_MACS", 1)
    threads.set_num_threads(2)
    yield
    threads.set_num_threads(1)


def on_two_threads(fn):
    """fn() on one thread, then on two with every loop split: both results."""
    one = fn()
    threads.set_num_threads(2)
    try:
        return one, fn()
    finally:
        threads.set_num_threads(1)


@pytest.mark.parametrize("count", [0, -1, 1.5, "2", True, None])
def test_set_num_threads_rejects_anything_but_a_whole_number_of_at_least_one(count):
    with pytest.raises(ConfigError, match=r"set_num_threads: expected a whole number of threads >= 1, got"):
        xpnn.set_num_threads(count)
    assert xpnn.get_num_threads() == 1


def test_more_than_one_thread_holds_blas_to_one_and_one_gives_its_threads_back():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(2, user_api="blas"):  # a count to come back to, even on a one-core runner
        held_to_one_and_restored()


def held_to_one_and_restored():
    before = blas_counts()
    assert before and all(count == 2 for count in before)
    xpnn.set_num_threads(2)
    try:
        assert xpnn.get_num_threads() == 2
        assert all(count == 1 for count in blas_counts())
        assert threads.blas_threads() == max(before or [1])  # what BLAS had, not the limit
    finally:
        xpnn.set_num_threads(1)
    assert blas_counts() == before


def test_parallel_restores_the_count_set_before():
    with threads.parallel(2) as count:
        assert count == xpnn.get_num_threads() == 2
        with threads.parallel(None) as inner:  # None keeps a count above one
            assert inner == 2
    assert xpnn.get_num_threads() == 1
    with pytest.raises(RuntimeError, match="inside"):
        with threads.parallel(2):
            raise RuntimeError("inside")
    assert xpnn.get_num_threads() == 1


@pytest.mark.parametrize("size, parts, grain", [(10, 2, 1), (7, 3, 1), (1, 4, 1), (0, 2, 1), (100, 2, 60), (120, 2, 60), (9, 9, 2)])
def test_ranges_cover_the_size_in_order_with_at_least_a_grain_each(size, parts, grain):
    pieces = threads.ranges(size, parts, grain)
    assert pieces[0][0] == 0 and pieces[-1][1] == size
    assert all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))
    assert len(pieces) <= max(1, parts)
    if len(pieces) > 1:
        assert all(stop - start >= grain for start, stop in pieces)
        assert max(stop - start for start, stop in pieces) - min(stop - start for start, stop in pieces) <= 1


@pytest.mark.parametrize("failing", [0, 1])
def test_run_returns_results_in_order_and_raises_once_every_piece_has_finished(failing):
    """The caller's piece (0) or a pool piece (1) raises; run raises only after the slow pieces
    on the pool have finished."""
    import time

    finished = []

    def work(start, stop):
        if start == failing:
            raise ValueError(f"piece {start}")
        time.sleep(0.05)
        finished.append(start)
        return start

    with threads.parallel(3):
        assert threads.run(lambda s, e: (s, e), [(0, 1), (1, 3), (3, 4)]) == [(0, 1), (1, 3), (3, 4)]
        with pytest.raises(ValueError, match=f"piece {failing}"):
            threads.run(work, [(0, 1), (1, 2), (2, 3)])
        assert sorted(finished) == sorted({0, 1, 2} - {failing})  # inside: the pool is still up


@pytest.mark.parametrize("a_shape, b_shape", [
    ((40, 30), (30, 50)),        # columns split
    ((50, 30), (30, 40)),        # rows split
    ((16, 6, 20), (16, 20, 9)),  # the stack split (Winograd's 16 products)
    ((1, 8, 300), (1, 300, 20)), # a thin product: the inner dimension split, partials added
    ((3, 4), (4, 2)),            # rows and columns too short: inner split
    ((2, 40, 30), (30, 50)),     # a stack times one matrix (Linear's 3-D input): columns split
    ((1, 16, 6, 20), (16, 20, 9)),  # a broadcast 4-D stack
])
def test_split_matmul_equals_the_plain_product(two_threads, a_shape, b_shape):
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=a_shape), rng.normal(size=b_shape)
    np.testing.assert_allclose(ops.matmul(a, b), a @ b, rtol=1e-13, atol=1e-13)
    out = np.empty(np.broadcast_shapes(a_shape[:-2], b_shape[:-2]) + (a_shape[-2], b_shape[-1]))
    assert ops.matmul(a, np.swapaxes(np.swapaxes(b, -1, -2).copy(), -1, -2), out=out) is out  # a strided operand
    np.testing.assert_allclose(out, a @ b, rtol=1e-13, atol=1e-13)
    ints = (a * 10).astype(np.int64), (b * 10).astype(np.int64)
    assert np.array_equal(ops.matmul(*ints), ints[0] @ ints[1])


def test_split_matmul_takes_one_dimensional_operands_as_numpy_does(two_threads):
    rng = np.random.default_rng(0)
    v, m = rng.normal(size=30), rng.normal(size=(30, 40))
    np.testing.assert_allclose(ops.matmul(v, m), v @ m, rtol=1e-13)
    np.testing.assert_allclose(ops.matmul(m.T, v), m.T @ v, rtol=1e-13)
    layer = nn.Linear(30, 40).to("cpu", dtype="float64")
    np.testing.assert_allclose(layer(v), v @ layer.weight.data.T + layer.bias.data, rtol=1e-13)


def test_split_matmul_leaves_other_namespaces_alone(two_threads):
    strict = pytest.importorskip("array_api_strict")

    host = np.arange(12.0).reshape(3, 4)
    a = strict.asarray(host)
    product = ops.matmul(a, strict.matrix_transpose(a))
    assert isinstance(product, type(a))
    assert np.array_equal(np.asarray(product), host @ host.T)


def layer_outputs_and_gradients(model, x, seed=0):
    """The output, input gradient and parameter gradients of one forward and backward."""
    y = model(x)
    grad = np.random.default_rng(seed).normal(size=y.shape).astype(y.dtype)
    model.zero_grad()
    grad_x = model.backward(grad)
    return [np.array(y), np.array(grad_x)] + [np.array(p.grad) for p in model.parameters()]


@pytest.mark.parametrize("name, make, shape", [
    ("winograd conv, BatchNorm, ReLU, 2x2 max pool", lambda: nn.Sequential(
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 16 * 16, 10)),
     (32, 16, 32, 32)),
    ("winograd, five 4x4 tile rows (the second thread's first row into a band)", lambda: nn.Sequential(nn.Conv2d(16, 16, 3, padding=1)), (20, 16, 18, 24)),
    ("direct conv (few outputs), im2col conv, col2im", lambda: nn.Sequential(
        nn.Conv2d(3, 6, 5, padding=2), nn.ReLU(), nn.Conv2d(6, 20, 3, stride=2), nn.ReLU()), (8, 3, 20, 20)),
])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_model_split_over_two_threads_equals_one_thread(monkeypatch, name, make, shape, dtype):
    """Every loop split (no size limit): elementwise and per-channel loops give identical values;
    products and the summed weight gradients agree to round-off (their sums are split)."""
    monkeypatch.setattr(threads, "SPLIT_MIN_ELEMENTS", 1)
    monkeypatch.setattr(gemm, "SPLIT_MIN_MACS", 1)
    xpnn.manual_seed(0)
    model = make().to("cpu", dtype=np.dtype(dtype).name)
    x = np.random.default_rng(1).normal(size=shape).astype(dtype)
    one, two = on_two_threads(lambda: layer_outputs_and_gradients(model, x))
    if "winograd" in name:
        assert isinstance(model[0]._windows, WinogradWindows)
    tol = dict(rtol=2e-4, atol=2e-4) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)
    for a, b in zip(one, two):
        np.testing.assert_allclose(b, a, **tol)


def test_relu_pooling_batchnorm_adam_and_add_split_give_the_same_values(monkeypatch):
    monkeypatch.setattr(threads, "SPLIT_MIN_ELEMENTS", 1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6, 7, 8, 5)).astype(np.float32)
    from xpnn.kernels import numba_elementwise, numba_normalization, numba_windows

    def compute():
        y, mask = numba_elementwise.relu(x)
        best, arg = numba_windows.max_pool_tiles(x, (2, 2))
        norm = numba_normalization.forward(x.reshape(6, 7, -1), np.ones(7, np.float32), np.zeros(7, np.float32), 1e-5)
        param, state = x.copy(), [np.zeros_like(x), np.zeros_like(x)]
        numba_elementwise.adam_update(param, x, *state, None, 0.9, 0.999, 1e-3, 1e-8, 0.0, 1.0)
        return [y, mask, best, arg, numba_windows.max_pool_tiles_backward(best, arg, (2, 2)),
                numba_elementwise.relu_backward(x, mask), *norm, param, *state,
                ops.add(x.transpose(3, 0, 1, 2), np.ascontiguousarray(x.transpose(3, 0, 1, 2)))]

    one, two = on_two_threads(compute)
    for k, (a, b) in enumerate(zip(one, two)):
        if k in (6, 7, 8):  # batch norm's sums are reassociated (vectorised), so alignment may move a last bit
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
        else:
            assert np.array_equal(a, b)


def test_trainer_splits_a_wide_convolutional_step_and_leaves_others_to_blas(monkeypatch):
    monkeypatch.setattr(threads, "blas_threads", lambda: 3)  # as on a 3-core machine, whatever this one has
    rng = np.random.default_rng(0)
    seen = {}

    class Record:
        def __init__(self, key):
            self.key = key

        def __getattr__(self, name):  # every callback hook records the count in force
            return lambda *args, **kwargs: seen.setdefault(self.key, xpnn.get_num_threads())

    images, labels = rng.normal(size=(8, 16, 8, 8)).astype(np.float32), rng.integers(0, 3, 8)
    wide = nn.Sequential(nn.Conv2d(16, 16, 3), nn.Flatten(), nn.Linear(576, 3))
    narrow = nn.Sequential(nn.Conv2d(16, 4, 3), nn.Flatten(), nn.Linear(144, 3))
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(1024, 3))
    for key, model, count in [("wide", wide, None), ("narrow", narrow, None), ("mlp", mlp, None), ("mlp two", mlp, 2)]:
        trainer = xpnn.Trainer(model, optim.SGD(model.parameters(), lr=0.1), verbose=False, threads=count)
        trainer.fit((images, labels), epochs=1, batch_size=4, progress=False, callbacks=[Record(key)])
        assert xpnn.get_num_threads() == 1  # restored after fit
    assert seen == {"wide": 3, "narrow": 1, "mlp": 1, "mlp two": 2}


@pytest.mark.parametrize("count", [0, 2.0, True])
def test_trainer_rejects_a_thread_count_that_is_not_a_whole_number_of_at_least_one(count):
    model = nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"Trainer: expected threads to be None or a whole number >= 1, got"):
        xpnn.Trainer(model, optim.SGD(model.parameters(), lr=0.1), threads=count)


def test_the_cli_passes_threads_to_the_trainer_and_refuses_a_bad_count(tmp_path, capsys, monkeypatch):
    from xpnn import cli
    from xpnn.train import trainer

    counts = []
    fit = trainer.Trainer._fit
    monkeypatch.setattr(trainer.Trainer, "_fit", lambda self, *args: (counts.append(xpnn.get_num_threads()), fit(self, *args))[1])
    assert cli.main(["train", "--dataset", "digits", "--model", "mlp", "--epochs", "1", "--threads", "2",
                     "--out", str(tmp_path / "run"), "--no-progress"]) == 0
    assert counts == [2] and xpnn.get_num_threads() == 1
    capsys.readouterr()
    assert cli.main(["train", "--threads", "0"]) == 2
    assert "argument --threads: expected a positive integer, got '0'" in capsys.readouterr().err


def test_a_piece_that_splits_again_runs_its_pieces_itself():
    """A piece on the pool that calls run() again does not wait for the (busy) pool (checked in a
    thread of its own, so a regression fails after 10 s instead of hanging)."""
    import threading

    result = []

    def nested():
        with threads.parallel(2):
            result.append(threads.run(lambda s, e: threads.run(lambda a, b: (a, b), [(s, s + 1), (s + 1, e)]), [(0, 2), (2, 4)]))

    worker = threading.Thread(target=nested, daemon=True)
    worker.start()
    worker.join(10)
    assert result == [[[(0, 1), (1, 2)], [(2, 3), (3, 4)]]]


@pytest.mark.parametrize("m", [2, 4])
@pytest.mark.parametrize("count, height, padding", [(2, 18, 1), (3, 6, 1), (3, 10, 0), (4, 16, 1), (2, 8, 1)])
def test_winograd_threads_never_add_into_the_same_input_gradient_rows(monkeypatch, m, count, height, padding):
    """Race check: every addition of tiles into an input-gradient array is timed, one tile row
    per chunk, each made slow and the first thread's last one (whose rows the second thread's
    first tile row shares) slowest, so additions into shared rows of one array from two threads
    would overlap in time (with one tile row per thread they would). No two such additions
    overlap; every thread but the first adds its first row into a band of its own (one array per
    thread besides the image); the result equals one thread's."""
    from xpnn.ops import winograd

    monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)
    calls, lock = [], threading.Lock()
    transposed = winograd.input_tiles_transposed
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 16, height + 2 - 2 * padding, 8))
    out_size = (height, 8 + 2 * padding - 2)
    windows = winograd.WinogradWindows(x, (padding, padding), out_size, m)
    weight = rng.normal(size=(1, 16, 16 * 9))
    grad = rng.normal(size=(1, 16, out_size[0] * out_size[1] * 3))
    one = windows.input_gradient(weight, grad)
    first_range_end = threads.ranges(windows.tile_grid[0], count)[0][1]

    def recording_transposed(tiles, image, origin, pad, *, m):
        start = time.perf_counter()
        time.sleep(0.2 if image.shape[1] == x.shape[2] and origin[0] + tiles.shape[2] == first_range_end else 0.01)
        transposed(tiles, image, origin, pad, m=m)
        with lock:
            calls.append((threading.get_ident(), id(image), origin[0], tiles.shape[2], start, time.perf_counter()))

    monkeypatch.setattr(winograd, "input_tiles_transposed", recording_transposed)
    with threads.parallel(count):
        split = windows.input_gradient(weight, grad)
    np.testing.assert_allclose(split, one, rtol=1e-12, atol=1e-12)
    working = min(count, windows.tile_grid[0])
    assert len({thread for thread, *_ in calls}) == working
    assert len({target for _, target, *_ in calls}) == working  # the image and a band per thread after the first
    assert sum(n for *_, n, _, _ in calls) == windows.tile_grid[0]
    for k, (thread, target, first, n, start, end) in enumerate(calls):
        rows = set(range(m * first, m * (first + n) + 2))
        for other, other_target, other_first, other_n, other_start, other_end in calls[k + 1:]:
            if other != thread and other_target == target and rows & set(range(m * other_first, m * (other_first + other_n) + 2)):
                assert end <= other_start or other_end <= start


def test_padded_and_zeros_written_by_threads_equal_numpys(two_threads):
    """ops.layout.padded: the source at its offset, zeros around it (split over the leading
    axis); ops.layout.zeros; the same on array_api_strict, unsplit."""
    from xpnn.ops import layout

    source = np.random.default_rng(0).normal(size=(5, 4, 3, 2))
    out = layout.padded(source, (5, 7, 6, 2), (0, 1, 2, 0))
    expected = np.zeros((5, 7, 6, 2))
    expected[:, 1:5, 2:5, :] = source
    assert np.array_equal(out, expected) and out.flags.c_contiguous
    assert np.array_equal(layout.padded(source, source.shape, (0, 0, 0, 0)), source)
    assert np.array_equal(layout.zeros((6, 3), source), np.zeros((6, 3)))
    strict = pytest.importorskip("array_api_strict")
    assert np.array_equal(np.asarray(layout.padded(strict.asarray(source), (5, 7, 6, 2), (0, 1, 2, 0))), expected)
    assert np.array_equal(np.asarray(layout.zeros((6, 3), strict.asarray(source))), np.zeros((6, 3)))

"""xpnn.no_grad: every layer's forward keeps no backward cache, gives the same output, and a
backward after it says why it cannot run; the grad-mode contexts nest, decorate and restore."""

import threading

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb, nn
from xpnn.errors import CallOrderError
from xpnn.models import LeNet

LABELS = "labels"
INDICES = "indices"  # integer indices as the input (Embedding), no target

# Every layer and loss class in xpnn.nn: (make(device), input shape, target). Dropout draws from
# a generator reset before each forward, so the cached and cache-free forwards drop alike.
CASES = {
    "Linear": [(lambda d: nn.Linear(4, 3, xp=d), (2, 4), None)],
    "Identity": [(lambda d: nn.Identity(), (2, 4), None)],
    "Flatten": [(lambda d: nn.Flatten(), (2, 3, 2, 2), None)],
    "Dropout": [(lambda d: nn.Dropout(0.5), (4, 5), None)],
    "Dropout2d": [(lambda d: nn.Dropout2d(0.5), (2, 3, 2, 2), None)],
    "ReLU": [(lambda d: nn.ReLU(), (2, 3, 4, 4), None)],
    "LeakyReLU": [(lambda d: nn.LeakyReLU(0.1), (2, 5), None)],
    "Sigmoid": [(lambda d: nn.Sigmoid(), (2, 5), None)],
    "Tanh": [(lambda d: nn.Tanh(), (2, 5), None)],
    "GELU": [(lambda d: nn.GELU(), (2, 5), None), (lambda d: nn.GELU("tanh"), (2, 5), None)],
    "Softmax": [(lambda d: nn.Softmax(), (2, 5), None)],
    "LogSoftmax": [(lambda d: nn.LogSoftmax(dim=1), (2, 5), None)],
    "ELU": [(lambda d: nn.ELU(0.5), (2, 5), None)],
    "SiLU": [(lambda d: nn.SiLU(), (2, 5), None)],
    "Softplus": [(lambda d: nn.Softplus(2.0, 1.0), (2, 5), None)],
    "Mish": [(lambda d: nn.Mish(), (2, 5), None)],
    "Hardtanh": [(lambda d: nn.Hardtanh(0.1, 0.9), (2, 5), None)],
    "ReLU6": [(lambda d: nn.ReLU6(), (2, 5), None)],
    "Hardswish": [(lambda d: nn.Hardswish(), (2, 5), None)],
    "Softsign": [(lambda d: nn.Softsign(), (2, 5), None)],
    "PReLU": [(lambda d: nn.PReLU(xp=d), (2, 5), None), (lambda d: nn.PReLU(3, xp=d), (2, 3, 4), None)],
    "Conv2d": [(lambda d: nn.Conv2d(2, 3, 3, padding=1, xp=d), (2, 2, 5, 5), None),
               (lambda d: nn.Conv2d(4, 4, 3, groups=2, xp=d), (2, 4, 5, 5), None)],
    "MaxPool2d": [(lambda d: nn.MaxPool2d(2), (2, 2, 4, 4), None),
                  (lambda d: nn.MaxPool2d(3, stride=1, padding=1), (2, 2, 4, 4), None)],
    "AvgPool2d": [(lambda d: nn.AvgPool2d(2, padding=1, count_include_pad=False), (2, 2, 4, 4), None)],
    "Conv1d": [(lambda d: nn.Conv1d(2, 3, 3, padding=1, xp=d), (2, 2, 6), None),
               (lambda d: nn.Conv1d(4, 4, 3, stride=2, groups=2, xp=d), (2, 4, 7), None)],
    "ConvTranspose2d": [(lambda d: nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1, xp=d), (2, 2, 4, 4), None),
                        (lambda d: nn.ConvTranspose2d(4, 4, 3, groups=2, xp=d), (2, 4, 3, 3), None)],
    "MaxPool1d": [(lambda d: nn.MaxPool1d(2), (2, 2, 6), None), (lambda d: nn.MaxPool1d(3, stride=1, padding=1), (2, 2, 5), None)],
    "AvgPool1d": [(lambda d: nn.AvgPool1d(3, 2, padding=1, count_include_pad=False), (2, 2, 7), None)],
    "AdaptiveAvgPool2d": [(lambda d: nn.AdaptiveAvgPool2d((2, 3)), (2, 2, 5, 6), None),
                          (lambda d: nn.AdaptiveAvgPool2d(1), (2, 2, 5, 6), None)],
    "BatchNorm1d": [(lambda d: nn.BatchNorm1d(3, xp=d), (4, 3), None)],
    "BatchNorm2d": [(lambda d: nn.BatchNorm2d(2, xp=d), (3, 2, 2, 2), None),
                    (lambda d: nn.BatchNorm2d(2, xp=d).eval(), (3, 2, 2, 2), None)],
    "Residual": [(lambda d: nn.Residual(nn.Sequential(nn.Conv2d(2, 2, 3, padding=1, xp=d), nn.ReLU())), (2, 2, 4, 4), None),
                 (lambda d: nn.Residual(nn.Linear(4, 3, xp=d), nn.Linear(4, 3, xp=d)), (2, 4), None)],
    "Parallel": [(lambda d: nn.Parallel(nn.Linear(4, 3, xp=d), nn.Tanh()), (2, 4), None),
                 (lambda d: nn.Parallel(nn.Conv2d(2, 2, 1, xp=d), nn.ReLU(), merge="sum"), (2, 2, 3, 3), None)],
    "CrossEntropyLoss": [(lambda d: nn.CrossEntropyLoss(), (4, 3), LABELS),
                         (lambda d: nn.CrossEntropyLoss(label_smoothing=0.1), (4, 3), LABELS),
                         (lambda d: nn.CrossEntropyLoss(), (4, 3), "probabilities")],
    "NLLLoss": [(lambda d: nn.NLLLoss(), (4, 3), LABELS)],
    "MSELoss": [(lambda d: nn.MSELoss(), (4, 3), "probabilities")],
    "BCEWithLogitsLoss": [(lambda d: nn.BCEWithLogitsLoss(), (4, 3), "probabilities")],
    "BCELoss": [(lambda d: nn.BCELoss(), (4, 3), "probabilities")],
    "L1Loss": [(lambda d: nn.L1Loss(), (4, 3), "probabilities")],
    "SmoothL1Loss": [(lambda d: nn.SmoothL1Loss(beta=0.5), (4, 3), "probabilities"),
                     (lambda d: nn.SmoothL1Loss(beta=0), (4, 3), "probabilities")],
    "HuberLoss": [(lambda d: nn.HuberLoss(delta=0.5), (4, 3), "probabilities")],
    "KLDivLoss": [(lambda d: nn.KLDivLoss(reduction="batchmean"), (4, 3), "probabilities"),
                  (lambda d: nn.KLDivLoss(log_target=True), (4, 3), "probabilities")],
    "LayerNorm": [(lambda d: nn.LayerNorm(5, xp=d), (2, 5), None), (lambda d: nn.LayerNorm((2, 3), elementwise_affine=False, xp=d), (2, 2, 3), None)],
    "GroupNorm": [(lambda d: nn.GroupNorm(2, 4, xp=d), (2, 4, 3, 3), None)],
    "Embedding": [(lambda d: nn.Embedding(6, 3, padding_idx=0, xp=d), (2, 5), INDICES)],
    "Upsample": [(lambda d: nn.Upsample(scale_factor=2), (2, 2, 3, 3), None),
                 (lambda d: nn.Upsample(size=(4, 5), mode="bilinear"), (2, 2, 3, 3), None)],
}
PARAMS = [pytest.param(*case, id=f"{name}-{i}") for name, cases in CASES.items() for i, case in enumerate(cases)]

# Attributes that hold state or constants, not what a forward caches for backward.
NOT_CACHE = {"_parameters", "_buffers", "_modules", "_divisors", "_matrices", "xp", "device", "generator",
             "_init_args", "_init_children"}


def test_every_layer_class_has_a_case():
    classes = {name for name in nn.__all__ if isinstance(getattr(nn, name), type) and issubclass(getattr(nn, name), nn.Module)}
    assert classes - {"Module", "Sequential", "ModuleList", "ModuleDict"} == set(CASES)  # (containers with no forward)


def kept_arrays(module):
    """The arrays (and array-holding closures' arrays) reachable from ``module``'s attributes
    other than its parameters and buffers: what a forward left behind for backward."""
    found, seen = [], set()

    def walk(value):
        if value is None or isinstance(value, (bool, int, float, str, type, nn.Module, nn.Parameter, np.random.Generator)):
            return
        if id(value) in seen:
            return
        seen.add(id(value))
        if hasattr(value, "shape") and hasattr(value, "dtype"):
            found.append(value)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, (list, tuple, set)):
            for item in value:
                walk(item)
        elif callable(value) and hasattr(value, "__closure__"):
            for cell in value.__closure__ or ():
                walk(cell.cell_contents)
        elif hasattr(value, "__self__") and hasattr(value, "__func__"):
            walk(value.__self__)
        elif hasattr(value, "__dict__") and not isinstance(value, type(np)):
            walk(vars(value))

    for name, value in vars(module).items():
        if name not in NOT_CACHE and name not in module._buffers:
            walk(value)
    return found


def _inputs(backend, rng, shape, target):
    if target == INDICES:
        return (backend.asarray(rng.integers(0, 6, size=shape), np.int64),)
    x = backend.asarray(rng.uniform(0.05, 0.95, size=shape), np.float32)
    if target is None:
        return (x,)
    if target == LABELS:
        return x, backend.asarray(rng.integers(0, shape[1], size=shape[0]), np.int64)
    return x, backend.asarray(rng.uniform(0.0, 1.0, size=shape), np.float32)


def _run(layer, inputs):
    if hasattr(layer, "p"):
        layer.generator = np.random.default_rng(7)
    return layer(*inputs)


@pytest.mark.parametrize("make, shape, target", PARAMS)
def test_no_grad_forward_keeps_no_cache_and_gives_the_same_output(backend, rng, make, shape, target):
    layer = make(backend.device)
    inputs = _inputs(backend, rng, shape, target)
    cached = xb.to_numpy(_run(layer, inputs))
    names = getattr(type(layer), "_cache", ())
    assert not names or any(getattr(layer, name, None) is not None for name in names)
    with xpnn.no_grad():
        out = _run(layer, inputs)  # also drops what the cached forward kept
    free = xb.to_numpy(out)
    np.testing.assert_array_equal(free, cached)
    assert all(getattr(layer, name, None) is None for name in names)
    assert kept_arrays(layer) == []
    grad = () if target not in (None, INDICES) else (backend.xp.ones_like(out),)
    with pytest.raises(CallOrderError, match=rf"{type(layer).__name__}\(.*\): backward needs the cache of a forward run with "
                                             r"gradients enabled; the last forward ran under xpnn.no_grad\(\) and kept none"):
        layer.backward(*grad)
    _run(layer, inputs)  # with gradients enabled again, backward works
    layer.backward(*grad)


def test_lenet_inference_under_no_grad_keeps_nothing(backend, rng):
    model = LeNet(1, (12, 12), 4, xp=backend.device)
    x = backend.asarray(rng.normal(size=(3, 1, 12, 12)), np.float32)
    model.eval()
    cached = xb.to_numpy(model(x))
    assert any(kept_arrays(m) for m in model.modules())
    with xpnn.no_grad():
        free = xb.to_numpy(model(x))
    np.testing.assert_array_equal(free, cached)
    assert [type(m).__name__ for m in model.modules() if kept_arrays(m)] == []
    with pytest.raises(CallOrderError, match=r"LeNet\(\): backward needs the cache"):
        model.backward(backend.xp.ones((3, 4), dtype=backend.xp.float32, device=backend.place))


def test_eval_mode_alone_keeps_the_cache_as_in_pytorch(backend, rng):
    """eval() changes what layers compute, not whether gradients can flow: backward through an
    eval-mode model works (BatchNorm's eval-mode gradient checks rely on it)."""
    model = nn.Sequential(nn.Linear(3, 4, xp=backend.device), nn.BatchNorm1d(4, xp=backend.device), nn.ReLU()).eval()
    y = model(backend.asarray(rng.normal(size=(2, 3)), np.float32))
    assert tuple(model.backward(backend.xp.ones_like(y)).shape) == (2, 3)


def test_no_grad_leaves_batchnorm_statistics_to_the_mode(backend, rng):
    layer = nn.BatchNorm1d(3, xp=backend.device)
    x = backend.asarray(rng.normal(size=(4, 3)), np.float32)
    with xpnn.no_grad():
        layer(x)  # training mode: the running statistics move, as in PyTorch
    assert int(xb.to_numpy(layer.num_batches_tracked)) == 1
    layer.eval()
    before = xb.to_numpy(layer.running_mean).copy()
    with xpnn.no_grad():
        layer(x)
    np.testing.assert_array_equal(xb.to_numpy(layer.running_mean), before)


def test_a_subclass_reads_its_parents_cache_inside_its_forward():
    class Scaled(nn.Linear):
        def forward(self, x):
            y = super().forward(x)
            assert self._x is x  # the parent's cache lives until the outermost forward returns
            return y * 2

    layer = Scaled(3, 2)
    with xpnn.no_grad():
        layer(np.ones((2, 3), np.float32))
    assert layer._x is None
    with pytest.raises(CallOrderError, match="under xpnn.no_grad"):
        layer.backward(np.ones((2, 2), np.float32))


def test_a_user_layer_without_cache_names_still_refuses_backward():
    class Square(nn.Module):
        def forward(self, x):
            self._x = x
            return x * x

        def backward(self, grad):
            return 2 * self._x * grad

    layer = Square()
    with xpnn.no_grad():
        layer(np.ones(3))
    with pytest.raises(CallOrderError, match=r"Square\(\): backward needs the cache"):
        layer.backward(np.ones(3))


def test_contexts_nest_and_restore():
    assert xpnn.is_grad_enabled()
    with xpnn.no_grad():
        assert not xpnn.is_grad_enabled()
        with xpnn.enable_grad():
            assert xpnn.is_grad_enabled()
            with xpnn.no_grad():
                assert not xpnn.is_grad_enabled()
            assert xpnn.is_grad_enabled()
        assert not xpnn.is_grad_enabled()
    assert xpnn.is_grad_enabled()


def test_state_is_restored_when_an_exception_leaves_the_block():
    with pytest.raises(KeyError):
        with xpnn.no_grad():
            raise KeyError("boom")
    assert xpnn.is_grad_enabled()

    @xpnn.no_grad()
    def fails():
        raise ValueError("boom")

    with pytest.raises(ValueError):
        fails()
    assert xpnn.is_grad_enabled()


def test_decorators_with_and_without_parentheses():
    @xpnn.no_grad()
    def a():
        return xpnn.is_grad_enabled()

    @xpnn.no_grad
    def b(value):
        """docs"""
        return xpnn.is_grad_enabled(), value

    @xpnn.enable_grad()
    def c():
        return xpnn.is_grad_enabled()

    assert a() is False and b(3) == (False, 3) and b.__doc__ == "docs" and b.__name__ == "b"
    with xpnn.no_grad():
        assert c() is True
        assert not xpnn.is_grad_enabled()
    assert xpnn.is_grad_enabled()


def test_a_decorated_generator_runs_without_grad_only_inside():
    @xpnn.no_grad()
    def gen():
        for i in range(2):
            yield i, xpnn.is_grad_enabled()
        return "done"

    seen = []
    for item in gen():
        seen.append(item)
        assert xpnn.is_grad_enabled()
    assert seen == [(0, False), (1, False)]


def test_set_grad_enabled_as_a_function_and_a_context():
    xpnn.set_grad_enabled(False)
    try:
        assert not xpnn.is_grad_enabled()
    finally:
        xpnn.set_grad_enabled(True)
    assert xpnn.is_grad_enabled()
    with nn.set_grad_enabled(False):
        assert not xpnn.is_grad_enabled()
    assert xpnn.is_grad_enabled()

    @nn.set_grad_enabled(False)
    def f():
        return xpnn.is_grad_enabled()

    assert xpnn.is_grad_enabled() and f() is False and xpnn.is_grad_enabled()


def test_the_mode_is_per_thread():
    found = []
    with xpnn.no_grad():
        thread = threading.Thread(target=lambda: found.append(xpnn.is_grad_enabled()))
        thread.start()
        thread.join()
    assert found == [True]

"""The Python API refuses what cannot work with one clear xpnn error, and changes nothing when it
refuses (issue 14, "The Python API"): state loading all or nothing, optimizer and schedule
arguments, backward order and gradient shapes, impossible sizes, empty batches, float16, labels."""

import copy
import re

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn import nn, optim
from xpnn.errors import CallOrderError, CheckpointError, ConfigError, DTypeError, ShapeError
from xpnn.models import LeNet, SimpleCNN, build_model


def _model():
    xpnn.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.ReLU(), nn.Linear(3, 2))


def _host_state(module):
    return {k: v.copy() for k, v in module.state_dict().items()}


def _assert_same_state(before, module):
    after = module.state_dict()
    assert list(before) == list(after)
    for name in before:
        np.testing.assert_array_equal(before[name], after[name], err_msg=name)
        assert before[name].dtype == after[name].dtype, name


# ---- Module.load_state_dict ---------------------------------------------------------------------


@pytest.mark.parametrize("entry, value, message", [
    ("3.bias", np.zeros(2, dtype=np.int64), r"3.bias expected a floating dtype like the module's float32, got int64"),
    ("3.bias", np.zeros(2, dtype=bool), r"3.bias expected a floating dtype like the module's float32, got bool"),
    ("3.bias", np.zeros(2, dtype=np.complex64), r"3.bias expected a floating dtype like the module's float32, got complex64"),
    ("3.bias", np.array(["a", "b"]), r"3.bias expected a floating dtype like the module's float32, got str"),
    ("3.bias", [0.0, 0.0], r"3.bias expected an array, got list"),
    ("3.weight", np.zeros((3, 2), dtype=np.float32), r"3.weight expected shape \(2, 3\), got \(3, 2\)"),
    ("1.num_batches_tracked", np.array(2.5), r"1.num_batches_tracked expected an integer dtype like the module's int64, got float64"),
])
def test_module_load_state_dict_is_all_or_nothing(entry, value, message):
    model = _model()
    before = _host_state(model)
    state = {k: np.full_like(v, 7) for k, v in before.items()}  # every earlier entry would change
    state[entry] = value
    with pytest.raises(CheckpointError, match="Sequential.load_state_dict: " + message):
        model.load_state_dict(state)
    _assert_same_state(before, model)
    with pytest.raises(CheckpointError, match=message):
        model.check_state_dict(state)


def test_module_load_state_dict_casts_floats_and_keeps_integer_buffers(backend):
    model = _model().to(backend.device)
    state = {k: (v.astype(np.float64) if v.dtype == np.float32 else v + 3) for k, v in _model().state_dict().items()}
    model.load_state_dict(state)
    assert all(p.dtype == backend.xp.float32 for p in model.parameters())
    assert int(xb.to_numpy(model[1].num_batches_tracked)) == 3
    assert model[1].num_batches_tracked.dtype == backend.xp.int64


def test_module_load_state_dict_refuses_a_non_dict():
    with pytest.raises(CheckpointError, match="Sequential.load_state_dict: expected a dict of arrays, got list"):
        _model().load_state_dict([1, 2])


# ---- optimizers -----------------------------------------------------------------------------------


def _stepped(make, model=None):
    model = model or _model()
    opt = make(model.parameters())
    for _ in range(2):
        opt.zero_grad()
        for p in model.parameters():
            p.grad += 0.5
        opt.step()
    return model, opt


def test_optimizer_refuses_the_state_of_another_class():
    _, sgd = _stepped(lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9))
    _, adam = _stepped(lambda ps: optim.Adam(ps))
    with pytest.raises(CheckpointError, match="Adam.load_state_dict: expected a state_dict saved by Adam, got one saved by SGD"):
        adam.load_state_dict(sgd.state_dict())
    with pytest.raises(CheckpointError, match="AdamW.load_state_dict: expected a state_dict saved by AdamW, got one saved by Adam"):
        _stepped(lambda ps: optim.AdamW(ps))[1].load_state_dict(adam.state_dict())
    unlabelled = sgd.state_dict()
    del unlabelled["class"]  # a state_dict without its class is still told apart by its keys
    with pytest.raises(CheckpointError, match=r"param group 0 is missing \['amsgrad', 'betas', 'eps'\] and has unknown \['dampening', 'momentum', 'nesterov'\]"):
        adam.load_state_dict(unlabelled)


def _mutate(path, value):
    def apply(state):
        target = state
        for key in path[:-1]:
            target = target[key]
        if value is KeyError:
            del target[path[-1]]
        else:
            target[path[-1]] = value
    return apply


@pytest.mark.parametrize("change, message", [
    (_mutate(("state", 0, "step"), "x"), r"state 'step' of parameter 0: expected an int >= 0, got 'x'"),
    (_mutate(("state", 0, "step"), -1), r"state 'step' of parameter 0: expected an int >= 0, got -1"),
    (_mutate(("state", 9), {}), r"expected state indices of parameters 0..5, each once, got 9"),
    (_mutate(("state", 0, "exp_avg"), np.zeros((4, 4), dtype=np.float32)), r"state 'exp_avg' of parameter 0: expected shape \(3, 4\), got \(4, 4\)"),
    (_mutate(("state", 0, "exp_avg"), np.zeros((3, 4), dtype=np.int32)), r"state 'exp_avg' of parameter 0: expected a floating dtype, got int32"),
    (_mutate(("state", 0, "exp_avg_sq"), KeyError), r"expected the state of parameter 0 to hold \['exp_avg', 'exp_avg_sq', 'step'\], got \['exp_avg', 'step'\]"),
    (_mutate(("param_groups", 0, "lr"), "fast"), r"param group 0: expected lr to be a finite number >= 0, got 'fast'"),
    (_mutate(("param_groups", 0, "lr"), float("nan")), r"param group 0: expected lr to be a finite number >= 0, got nan"),
    (_mutate(("param_groups", 0, "betas"), [1.5, 0.9]), r"param group 0: expected betas to be a pair of numbers in \[0, 1\), got \(1.5, 0.9\)"),
    (_mutate(("param_groups", 0, "params"), [5, 4, 3, 2, 1, 0]), r"expected the groups' params to number the parameters 0..5 in order"),
    (_mutate(("state",), [1]), r"expected 'state' to be a dict of parameter index -> entries, got list"),
])
def test_optimizer_load_state_dict_checks_everything_first(change, message):
    _, source = _stepped(lambda ps: optim.Adam(ps, lr=0.01))
    saved = source.state_dict()
    model, opt = _stepped(lambda ps: optim.Adam(ps, lr=0.5))
    before = copy.deepcopy(opt.state_dict())
    bad = copy.deepcopy(saved)
    bad["state"][0]["exp_avg"] = bad["state"][0]["exp_avg"] + 1  # a valid entry that would change
    change(bad)
    with pytest.raises(CheckpointError, match="Adam.load_state_dict: " + message):
        opt.load_state_dict(bad)
    after = opt.state_dict()
    assert after["param_groups"] == before["param_groups"]
    for index, entries in before["state"].items():
        for key, value in entries.items():
            np.testing.assert_array_equal(after["state"][index][key], value)


def test_optimizer_state_with_json_keys_loads_and_continues():
    model, opt = _stepped(lambda ps: optim.RMSprop(ps, lr=0.01, momentum=0.5, centered=True))
    saved = opt.state_dict()
    saved["state"] = {str(i): entries for i, entries in saved["state"].items()}  # JSON object keys are strings
    other, fresh = _stepped(lambda ps: optim.RMSprop(ps, lr=0.5, momentum=0.5, centered=True))
    fresh.load_state_dict(saved)
    assert fresh.param_groups[0]["lr"] == 0.01
    assert all(st["step"] == 2 for st in fresh.state.values())


# ---- schedules ------------------------------------------------------------------------------------


def _schedule(make):
    opt = optim.SGD([nn.Parameter(np.zeros(1, dtype=np.float32))], lr=0.1)
    sched = make(opt)
    sched.step()
    return opt, sched


@pytest.mark.parametrize("change, message", [
    (lambda s: s.update(last_epoch="x"), r"expected last_epoch to be an int >= -1, got 'x'"),
    (lambda s: s.update(last_epoch=1.5), r"expected last_epoch to be an int >= -1, got 1.5"),
    (lambda s: s.update(base_lrs=[0.1, 0.2]), r"expected base_lrs to be 1 value\(s\), each a finite number >= 0, got \[0.1, 0.2\]"),
    (lambda s: s.update(step_size=0), r"expected step_size to be an int >= 1, got 0"),
    (lambda s: s.update(gamma="half"), r"expected gamma to be a finite number >= 0, got 'half'"),
    (lambda s: s.update(surprise=1), r"expected the keys \['base_lrs', 'gamma', 'last_epoch', 'step_size'\] of StepLR, got \['base_lrs', 'gamma', 'last_epoch', 'step_size', 'surprise'\]"),
])
def test_schedule_load_state_dict_checks_everything_first(change, message):
    _, source = _schedule(lambda o: optim.StepLR(o, 3, 0.5))
    bad = source.state_dict()
    bad["base_lrs"] = list(bad["base_lrs"])
    change(bad)
    _, sched = _schedule(lambda o: optim.StepLR(o, 2, 0.1))
    before = sched.state_dict()
    with pytest.raises(CheckpointError, match="StepLR.load_state_dict: " + message):
        sched.load_state_dict(bad)
    assert sched.state_dict() == before


def test_schedule_refuses_the_state_of_another_schedule():
    _, cosine = _schedule(lambda o: optim.CosineAnnealingLR(o, 10))
    _, step = _schedule(lambda o: optim.StepLR(o, 2))
    with pytest.raises(CheckpointError, match=r"StepLR.load_state_dict: expected the keys .* of StepLR, got \['T_max', 'base_lrs', 'eta_min', 'last_epoch'\]"):
        step.load_state_dict(cosine.state_dict())


# ---- backward before forward, gradient shapes -----------------------------------------------------

LAYERS = [
    (lambda xp: nn.Linear(3, 2, xp=xp), (4, 3)),
    (lambda xp: nn.Conv2d(2, 3, 3, padding=1, xp=xp), (2, 2, 5, 5)),
    (lambda xp: nn.MaxPool2d(2), (2, 2, 4, 4)),
    (lambda xp: nn.AvgPool2d(2), (2, 2, 4, 4)),
    (lambda xp: nn.AdaptiveAvgPool2d(1), (2, 2, 4, 4)),
    (lambda xp: nn.BatchNorm2d(2, xp=xp), (2, 2, 4, 4)),
    (lambda xp: nn.BatchNorm1d(3, xp=xp), (4, 3)),
    (lambda xp: nn.Dropout(0.5), (4, 3)),
    (lambda xp: nn.Dropout2d(0.5), (2, 2, 4, 4)),
    (lambda xp: nn.ReLU(), (4, 3)),
    (lambda xp: nn.LeakyReLU(), (4, 3)),
    (lambda xp: nn.Sigmoid(), (4, 3)),
    (lambda xp: nn.Tanh(), (4, 3)),
    (lambda xp: nn.GELU(), (4, 3)),
    (lambda xp: nn.Softmax(), (4, 3)),
    (lambda xp: nn.LogSoftmax(), (4, 3)),
    (lambda xp: nn.Flatten(), (2, 2, 4, 4)),
    (lambda xp: nn.Identity(), (4, 3)),
    (lambda xp: nn.Sequential(nn.Linear(3, 5, xp=xp), nn.ReLU()), (4, 3)),
    (lambda xp: SimpleCNN(1, (6, 6), 3, xp=xp), (2, 1, 6, 6)),
]


@pytest.mark.parametrize("make, shape", LAYERS)
def test_backward_before_forward_and_a_wrong_gradient_shape_name_the_layer(backend, make, shape):
    layer = make(backend.device)
    name = type(layer).__name__
    grad = backend.asarray(np.ones(shape, dtype=np.float32))
    with pytest.raises(CallOrderError, match=rf"^{name}\(.*\): backward called before forward; call the module on an input first"):
        layer.backward(grad)
    y = layer(backend.asarray(np.random.default_rng(0).normal(size=shape), np.float32))
    wrong = tuple(y.shape[:-1]) + (y.shape[-1] + 1,)
    tail = f"expected a gradient of shape {tuple(y.shape)} like the last forward's output, got {wrong}"
    with pytest.raises(ShapeError, match=rf"^{name}\(.*\): " + re.escape(tail)):
        layer.backward(backend.xp.ones(wrong, dtype=y.dtype, device=backend.place))
    assert tuple(layer.backward(backend.xp.ones_like(y)).shape) == shape


@pytest.mark.parametrize("make", [nn.CrossEntropyLoss, nn.NLLLoss, nn.MSELoss, nn.BCELoss, nn.BCEWithLogitsLoss])
def test_loss_backward_before_forward_names_the_loss(make):
    with pytest.raises(CallOrderError, match=rf"^{make.__name__}\(reduction='mean'.*\): backward called before forward"):
        make().backward()


def test_backward_params_is_checked_too():
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(CallOrderError, match=r"Sequential\(\): backward called before forward"):
        model.backward_params(np.ones((1, 2), dtype=np.float32))


# ---- impossible sizes at construction ----------------------------------------------------------


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Linear(0, 10), "Linear: expected in_features to be a positive int, got 0"),
    (lambda: nn.Linear(10, -1), "Linear: expected out_features to be a positive int, got -1"),
    (lambda: nn.Linear(2.5, 10), "Linear: expected in_features to be a positive int, got 2.5"),
    (lambda: nn.Conv2d(0, 4, 3), "Conv2d: expected positive in_channels, out_channels and groups, got in_channels=0"),
    (lambda: nn.Conv2d(1, 0, 3), "Conv2d: expected positive in_channels, out_channels and groups, got in_channels=1, out_channels=0"),
    (lambda: nn.Conv2d(1, 4, 0), "Conv2d: expected kernel_size to be a positive int or a pair of them, got 0"),
    (lambda: nn.Conv2d(1, 4, 3, stride=0), "Conv2d: expected stride to be a positive int or a pair of them, got 0"),
    (lambda: nn.Dropout(1.0), r"Dropout: expected a drop probability p in \[0, 1\), got 1.0"),
    (lambda: nn.Dropout(-0.1), r"Dropout: expected a drop probability p in \[0, 1\), got -0.1"),
    (lambda: nn.BatchNorm2d(0), "BatchNorm2d: expected a positive int num_features, got 0"),
    (lambda: nn.MaxPool2d(0), "MaxPool2d: expected kernel_size to be a positive int or a pair of them, got 0"),
    (lambda: nn.AvgPool2d(2, stride=0), "AvgPool2d: expected stride to be a positive int or a pair of them, got 0"),
    (lambda: nn.AdaptiveAvgPool2d(0), "AdaptiveAvgPool2d: expected output_size to be a positive int"),
])
def test_impossible_sizes_are_refused_at_construction(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


@pytest.mark.parametrize("name, shape, classes, message", [
    ("lenet", (1, 1), 10, "LeNet needs images of at least 2x2 pixels and 1 channel, got 1x1 with 1 channel"),
    ("lenet", (0, 0), 10, "LeNet needs images of at least 2x2 pixels and 1 channel, got 0x0 with 1 channel"),
    ("cnn", (0, 0), 10, "SimpleCNN needs images of at least 1x1 pixels and 1 channel, got 0x0 with 1 channel"),
    ("cnn", (0, 28, 28), 10, "SimpleCNN needs images of at least 1x1 pixels and 1 channel, got 28x28 with 0 channel"),
    ("mlp", (28, 0), 10, "MLP needs images of at least 1x1 pixels and 1 channel, got 28x0 with 1 channel"),
    ("mlp", "abc", 10, "MLP needs an image shape \\(H, W\\) or \\(C, H, W\\) of ints, got 'abc'"),
    ("mlp", (28, 28), 0, "MLP needs num_classes >= 1, got 0"),
    ("cnn", (28, 28), 0, "SimpleCNN needs num_classes >= 1, got 0"),
    ("lenet", (28, 28), 0, "LeNet needs num_classes >= 1, got 0"),
])
def test_models_say_what_images_and_classes_they_need(name, shape, classes, message):
    with pytest.raises(ConfigError, match=message):
        build_model(name, shape, classes)


def test_model_classes_check_their_input_too():
    with pytest.raises(ConfigError, match="LeNet needs num_classes >= 1, got 0"):
        LeNet(1, (28, 28), 0)
    with pytest.raises(ConfigError, match="SimpleCNN needs images of at least 1x1 pixels and 1 channel, got 8x8 with 0 channel"):
        SimpleCNN(0, (8, 8), 10)
    assert SimpleCNN(1, (1, 1), 2)(np.zeros((3, 1, 1, 1), dtype=np.float32)).shape == (3, 2)


# ---- empty batches ------------------------------------------------------------------------------


@pytest.mark.parametrize("make, shape", [
    (lambda xp: nn.Linear(3, 2, xp=xp), (0, 3)),
    (lambda xp: nn.Conv2d(2, 3, 3, padding=1, xp=xp), (0, 2, 5, 5)),
    (lambda xp: nn.Conv2d(2, 16, 3, xp=xp), (0, 2, 5, 5)),
    (lambda xp: nn.Conv2d(4, 4, 3, groups=2, xp=xp), (0, 4, 5, 5)),
    (lambda xp: nn.MaxPool2d(2), (0, 2, 4, 4)),
    (lambda xp: nn.MaxPool2d(3, stride=1, padding=1), (0, 2, 4, 4)),
    (lambda xp: nn.AvgPool2d(2), (0, 2, 4, 4)),
    (lambda xp: nn.BatchNorm2d(2, xp=xp).eval(), (0, 2, 4, 4)),
    (lambda xp: nn.ReLU(), (0, 3)),
    (lambda xp: LeNet(2, (8, 8), 3, xp=xp), (0, 2, 8, 8)),
])
def test_an_empty_batch_goes_through_and_back(backend, make, shape):
    layer = make(backend.device)
    layer.zero_grad()
    y = layer(backend.asarray(np.zeros(shape), np.float32))
    assert y.shape[0] == 0
    grad = layer.backward(backend.xp.ones_like(y))
    assert tuple(grad.shape) == shape
    assert all(not np.any(xb.to_numpy(p.grad)) for p in layer.parameters())


def test_batchnorm_training_on_too_few_values_says_so():
    with pytest.raises(ConfigError, match=r"BatchNorm2d\(2\): expected more than 1 value per channel when training, got input of shape \(0, 2, 4, 4\)"):
        nn.BatchNorm2d(2)(np.zeros((0, 2, 4, 4), dtype=np.float32))
    with pytest.raises(ConfigError, match=r"BatchNorm1d\(3\): expected more than 1 value per channel when training, got input of shape \(1, 3\)"):
        nn.BatchNorm1d(3)(np.zeros((1, 3), dtype=np.float32))


@pytest.mark.parametrize("make, target", [
    (nn.CrossEntropyLoss, lambda b: b.asarray(np.zeros(0, dtype=np.int64))),
    (lambda **kw: nn.CrossEntropyLoss(label_smoothing=0.1, **kw), lambda b: b.asarray(np.zeros(0, dtype=np.int64))),
    (nn.NLLLoss, lambda b: b.asarray(np.zeros(0, dtype=np.int64))),
    (nn.MSELoss, lambda b: b.asarray(np.zeros((0, 3)), np.float32)),
    (nn.BCELoss, lambda b: b.asarray(np.zeros((0, 3)), np.float32)),
    (nn.BCEWithLogitsLoss, lambda b: b.asarray(np.zeros((0, 3)), np.float32)),
])
def test_losses_on_an_empty_batch_sum_to_zero_and_refuse_a_mean(backend, make, target):
    x = backend.asarray(np.zeros((0, 3)), np.float32)
    loss_fn = make()
    name = type(loss_fn).__name__
    with pytest.raises(ShapeError, match=rf"{name}: cannot average over an empty input of shape \(0.*\); expected at least one element"):
        loss_fn(x, target(backend))
    total = make(reduction="sum")
    assert float(xb.to_numpy(total(x, target(backend)))) == 0.0
    assert tuple(total.backward().shape) == (0, 3)
    each = make(reduction="none")
    assert each(x, target(backend)).shape[0] == 0


# ---- labels ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [nn.CrossEntropyLoss, nn.NLLLoss])
def test_float_labels_are_a_dtype_error(backend, make):
    x = backend.asarray(np.zeros((2, 3)), np.float32)
    with pytest.raises(DTypeError, match=rf"{make.__name__}: expected integer class labels, got float32 labels of shape \(2,\)"):
        make()(x, backend.asarray(np.array([0.0, 1.0]), np.float32))


def test_labels_out_of_range_are_a_value_error_not_a_shape_error():
    x = np.zeros((2, 3), dtype=np.float32)
    for make in (nn.CrossEntropyLoss, nn.NLLLoss):
        with pytest.raises(ConfigError, match=rf"{make.__name__}: expected class labels in \[0, 2\], got 3") as info:
            make()(x, np.array([0, 3]))
        assert isinstance(info.value, ValueError) and not isinstance(info.value, ShapeError)
    with pytest.raises(ShapeError, match=r"CrossEntropyLoss: expected input of shape \(N, C\) with C >= 1 classes, got \(2, 0\)"):
        nn.CrossEntropyLoss()(np.zeros((2, 0), dtype=np.float32), np.array([0, 0]))


# ---- float16 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("make_opt", [
    lambda ps: optim.Adam(ps, lr=1e-3),
    lambda ps: optim.Adam(ps, lr=1e-3, amsgrad=True),
    lambda ps: optim.AdamW(ps, lr=1e-3),
    lambda ps: optim.SGD(ps, lr=0.05, momentum=0.9),
    lambda ps: optim.RMSprop(ps, lr=1e-3, momentum=0.5, centered=True),
], ids=["adam", "amsgrad", "adamw", "sgd", "rmsprop"])
@pytest.mark.parametrize("name", ["cnn", "lenet"])
def test_a_float16_cnn_trains_a_step(name, make_opt):
    """float16 convolutions and pooling take the portable paths; the optimizers update float16
    parameters in float32 (Adam's eps of 1e-8 is 0 in float16 and its updates would be 0/0)."""
    xpnn.manual_seed(0)
    model = build_model(name, (1, 8, 8), 4, dtype="float16")
    before = [xb.to_numpy(p.data).copy() for p in model.parameters()]
    opt = make_opt(model.parameters())
    loss_fn = nn.CrossEntropyLoss()
    x = np.random.default_rng(0).random((6, 1, 8, 8)).astype(np.float16)
    loss = loss_fn(model(x), np.array([0, 1, 2, 3, 0, 1]))
    model.backward(loss_fn.backward())
    opt.step()
    assert loss.dtype == np.float16 and np.isfinite(float(loss))
    assert all(p.dtype == np.float16 and np.all(np.isfinite(p.data)) for p in model.parameters())
    assert any(np.any(p.data != b) for p, b in zip(model.parameters(), before))
    state = [v for st in opt.state.values() for v in st.values() if hasattr(v, "dtype")]
    assert all(v.dtype == np.float32 for v in state)
    second = loss_fn(model(x), np.array([0, 1, 2, 3, 0, 1]))
    assert np.isfinite(float(second))

"""Architecture as data (issue 15): every layer, loss, container and model describes itself as JSON
data (get_config) and is rebuilt from it (nn.from_config) through the registry only; configs are
untrusted input; checkpoints carry the architecture, so xpnn.load and `xpnn eval` rebuild a model
built in Python without its code, and print(checkpoint) is a short summary."""

import json
from collections import OrderedDict

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn import models, nn
from xpnn.cli import main
from xpnn.errors import CheckpointError, ConfigError
from xpnn.nn import architecture
from xpnn.train import load_checkpoint, save_checkpoint

# Each of xpnn.nn's registered classes with non-default arguments and the input it takes: an
# input shape, or "loss:<kind>" for a loss's (input, target).
CASES = {
    "Sequential": (lambda: nn.Sequential(nn.Linear(4, 3, dtype="float64"), nn.Tanh()), {}, (2, 4)),
    "Linear": (None, dict(in_features=4, out_features=3, bias=False, init="xavier", dtype="float64"), (2, 4)),
    "Identity": (None, {}, (2, 4)),
    "Flatten": (None, dict(start_dim=2, end_dim=3), (2, 3, 4, 5)),
    "Dropout": (None, dict(p=0.3), (2, 4)),
    "Dropout2d": (None, dict(p=0.2), (2, 3, 4, 4)),
    "ReLU": (None, {}, (2, 4)),
    "LeakyReLU": (None, dict(negative_slope=0.2), (2, 4)),
    "Sigmoid": (None, {}, (2, 4)),
    "Tanh": (None, {}, (2, 4)),
    "GELU": (None, dict(approximate="tanh"), (2, 4)),
    "Softmax": (None, dict(dim=0), (2, 4)),
    "LogSoftmax": (None, dict(dim=0), (2, 4)),
    "ELU": (None, dict(alpha=0.5), (2, 4)),
    "SiLU": (None, {}, (2, 4)),
    "Softplus": (None, dict(beta=2.0, threshold=1.0), (2, 4)),
    "Mish": (None, {}, (2, 4)),
    "Hardtanh": (None, dict(min_val=-0.5, max_val=2.0), (2, 4)),
    "ReLU6": (None, {}, (2, 4)),
    "Hardswish": (None, {}, (2, 4)),
    "Softsign": (None, {}, (2, 4)),
    "PReLU": (None, dict(num_parameters=3, init=0.1, dtype="float64"), (2, 3, 4)),
    "CrossEntropyLoss": (None, dict(reduction="sum", label_smoothing=0.1), "loss:labels"),
    "NLLLoss": (None, dict(reduction="sum"), "loss:labels"),
    "MSELoss": (None, dict(reduction="sum"), "loss:values"),
    "BCEWithLogitsLoss": (None, dict(reduction="sum"), "loss:probabilities"),
    "BCELoss": (None, dict(reduction="sum"), "loss:probabilities"),
    "L1Loss": (None, dict(reduction="none"), "loss:values"),
    "SmoothL1Loss": (None, dict(reduction="sum", beta=0.5), "loss:values"),
    "HuberLoss": (None, dict(reduction="none", delta=0.5), "loss:values"),
    "KLDivLoss": (None, dict(reduction="batchmean", log_target=True), "loss:values"),
    "LayerNorm": (None, dict(normalized_shape=(3, 4), eps=1e-3, elementwise_affine=True, bias=False, dtype="float64"), (2, 3, 4)),
    "GroupNorm": (None, dict(num_groups=2, num_channels=4, eps=1e-3, affine=True, dtype="float64"), (2, 4, 3)),
    "Embedding": (None, dict(num_embeddings=7, embedding_dim=3, padding_idx=-1, scale_grad_by_freq=True, dtype="float64"), "indices"),
    "Upsample": (None, dict(scale_factor=(2, 1.5), mode="bilinear", align_corners=True), (2, 3, 4, 4)),
    "Residual": (lambda: nn.Residual(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), nn.Linear(4, 4, bias=False)), {}, (2, 4)),
    "Parallel": (lambda: nn.Parallel(OrderedDict(a=nn.Linear(4, 3), b=nn.Identity()), merge="concat", dim=-1), {}, (2, 4)),
    "ModuleList": (lambda: nn.ModuleList([nn.Linear(4, 3), nn.ModuleList([nn.ReLU()])]).append(nn.Tanh()), {}, None),
    "ModuleDict": (lambda: nn.ModuleDict({"head": nn.Linear(4, 3), "act": nn.ReLU()}), {}, None),
    "Conv2d": (None, dict(in_channels=2, out_channels=4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), groups=2, bias=False, init="normal", dtype="float64"), (2, 2, 6, 5)),
    "MaxPool2d": (None, dict(kernel_size=3, stride=2, padding=1), (2, 3, 7, 7)),
    "AvgPool2d": (None, dict(kernel_size=(2, 3), stride=1, padding=(1, 1), count_include_pad=False), (2, 3, 6, 6)),
    "AdaptiveAvgPool2d": (None, dict(output_size=(2, None)), (2, 3, 5, 4)),
    "Conv1d": (None, dict(in_channels=2, out_channels=4, kernel_size=3, stride=2, padding=1, dilation=2, groups=2, bias=False, init="xavier", dtype="float64"), (2, 2, 9)),
    "ConvTranspose2d": (None, dict(in_channels=2, out_channels=4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), output_padding=(1, 0), groups=2, bias=False, dilation=1, init="normal", dtype="float64"), (2, 2, 4, 3)),
    "MaxPool1d": (None, dict(kernel_size=3, stride=2, padding=1, dilation=1), (2, 3, 7)),
    "AvgPool1d": (None, dict(kernel_size=3, stride=1, padding=1, count_include_pad=False), (2, 3, 6)),
    "BatchNorm1d": (None, dict(num_features=3, eps=1e-3, momentum=None, affine=False), (4, 3)),
    "BatchNorm2d": (None, dict(num_features=3, momentum=0.5, dtype="float64"), (4, 3, 2, 2)),
}
NN_CLASSES = sorted(name for name, cls in nn.registered().items() if cls.__module__.startswith("xpnn.nn."))


def test_every_registered_nn_class_has_a_case():
    assert sorted(CASES) == NN_CLASSES
    assert {"MLP", "SimpleCNN", "LeNet"} <= set(nn.registered())


def _build(name, backend):
    make, args, _ = CASES[name]
    module = make() if make else nn.registered()[name](**args)
    return module.to(backend.device)


def _inputs(module, kind, backend, rng):
    params = list(module.parameters())
    dtype = xb.dtype_name(params[0].data.dtype) if params else "float32"
    if not isinstance(kind, str):
        return (backend.asarray(rng.standard_normal(kind), dtype),)
    if kind == "indices":
        return (backend.asarray(rng.integers(0, 7, (2, 3)), np.int64),)
    scores = rng.standard_normal((3, 4))
    if kind == "loss:labels":
        return backend.asarray(scores, "float32"), backend.asarray([0, 3, 1], np.int64)
    if kind == "loss:values":
        return backend.asarray(scores, "float32"), backend.asarray(rng.standard_normal((3, 4)), "float32")
    probabilities = rng.uniform(0.1, 0.9, (3, 4))
    return backend.asarray(probabilities, "float32"), backend.asarray(rng.uniform(0, 1, (3, 4)), "float32")


@pytest.mark.parametrize("name", NN_CLASSES)
def test_layer_config_round_trip(name, backend, rng):
    module = _build(name, backend)
    config = module.get_config()
    assert config["class"] == name
    text = json.dumps(config)  # JSON data only
    rebuilt = nn.from_config(json.loads(text), device=backend.device)
    assert type(rebuilt) is type(module)
    assert rebuilt.get_config() == config
    assert "xp" not in text and "generator" not in text
    rebuilt.load_state_dict(module.state_dict())
    if CASES[name][2] is None:  # a container with no forward (ModuleList, ModuleDict)
        return
    module.eval(), rebuilt.eval()
    inputs = _inputs(module, CASES[name][2], backend, rng)
    expected, found = module(*inputs), rebuilt(*inputs)
    assert xb.device_of(found) == xb.device_of(expected)
    np.testing.assert_array_equal(xb.to_numpy(found), xb.to_numpy(expected))


def test_config_holds_the_arguments_as_json_types():
    config = nn.Conv2d(2, 4, (3, 2), stride=(2, 1), dtype=np.float64).get_config()
    assert config == {"class": "Conv2d", "args": {
        "in_channels": 2, "out_channels": 4, "kernel_size": [3, 2], "stride": [2, 1], "padding": 0, "dilation": 1,
        "groups": 1, "bias": True, "init": "he", "dtype": "float64",
    }}
    assert nn.Linear(2, 3, dtype=np.dtype("float16")).get_config()["args"]["dtype"] == "float16"
    assert nn.MaxPool2d(2).get_config() == {"class": "MaxPool2d", "args": {"kernel_size": 2, "stride": None, "padding": 0, "dilation": 1}}


def test_nested_sequential_round_trip(rng):
    inner = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 3, 3, padding=1), act=nn.ReLU(), pool=nn.MaxPool2d(2)))
    model = nn.Sequential(inner, nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5)))
    model.append(nn.LogSoftmax())
    config = model.get_config()
    assert [m["class"] for m in config["args"]["modules"]] == ["Sequential", "Sequential", "LogSoftmax"]
    assert list(config["args"]["modules"][0]["args"]["modules"][0]) == ["conv", "act", "pool"]
    rebuilt = nn.from_config(json.loads(json.dumps(config)))
    assert rebuilt.get_config() == config
    assert list(rebuilt.state_dict()) == list(model.state_dict()) == ["0.conv.weight", "0.conv.bias", "1.1.weight", "1.1.bias"]
    rebuilt.load_state_dict(model.state_dict())
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_array_equal(rebuilt(x), model(x))


@pytest.mark.parametrize("model", [
    lambda: models.MLP([64, 16, 8, 10], activation=nn.GELU, dropout=0.1, init="xavier"),
    lambda: models.MLP([20, 3], activation="tanh", dtype="float64"),
    lambda: models.SimpleCNN(1, (8, 8), 10),
    lambda: models.LeNet(3, (12, 10), 5),
], ids=["mlp", "mlp-float64", "simple-cnn", "lenet"])
def test_models_round_trip(model):
    model = model()
    config = model.get_config()
    rebuilt = nn.from_config(json.loads(json.dumps(config)))
    assert type(rebuilt) is type(model) and rebuilt.get_config() == config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    # the budget estimate of xpnn's own layers is exact: an honest checkpoint passes it with no slack
    assert nn.check_config(config) == model.num_parameters()


def test_models_class_check():
    config = models.LeNet(1, (8, 8), 10).get_config()
    assert isinstance(models.LeNet.from_config(config), models.LeNet)
    with pytest.raises(ConfigError, match="expected a config of a MLP, found one of a LeNet"):
        models.MLP.from_config(config)


@pytest.fixture
def registry():
    """Registers test classes and removes them afterwards."""
    before = dict(architecture._REGISTRY)
    yield nn.register
    for name in set(architecture._REGISTRY) - set(before):
        architecture._NAMES.pop(architecture._REGISTRY.pop(name), None)


def _user_classes(register):
    @register
    class Scale(nn.Module):
        def __init__(self, features, init_value=1.0, xp=None):
            super().__init__(xp)
            self.scale = nn.Parameter(self.xp.full((features,), init_value, dtype=self.xp.float32, device=self.device))

        def forward(self, x):
            self._x = x
            return x * self.scale.data

        def backward(self, grad):
            self.scale.grad = self.scale.grad + self.xp.sum(grad * self._x, axis=0)
            return grad * self.scale.data

    @register(name="tests.Residual")
    class Residual(nn.Module):
        def __init__(self, block):
            super().__init__()
            self.block = block

        def forward(self, x):
            return x + self.block(x)

        def backward(self, grad):
            return grad + self.block.backward(grad)

    return Scale, Residual


def test_user_registered_layers_round_trip_through_a_checkpoint(registry, tmp_path, rng):
    Scale, Residual = _user_classes(registry)
    model = nn.Sequential(nn.Linear(4, 4), Residual(nn.Sequential(Scale(4, init_value=0.5), nn.Tanh())), nn.Linear(4, 2))
    config = model.get_config()
    assert config["args"]["modules"][1] == {"class": "tests.Residual", "args": {"block": {"class": "Sequential", "args": {"modules": [
        {"class": "Scale", "args": {"features": 4, "init_value": 0.5}}, {"class": "Tanh", "args": {}}]}}}}
    xpnn.save(model, tmp_path / "m.npz")
    loaded = xpnn.load(tmp_path / "m.npz")
    assert loaded.get_config() == config
    x = rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x), model(x))


def test_registering_a_taken_name_is_refused(registry):
    class Linear(nn.Module):
        pass

    with pytest.raises(ConfigError, match=r"the name 'Linear' is taken by xpnn\.nn\.linear\.Linear; pass name=\.\.\."):
        registry(Linear)
    with pytest.raises(TypeError, match="expected a Module subclass"):
        registry(dict)
    registry(Linear, name="mine.Linear")
    assert nn.registered()["mine.Linear"] is Linear


def test_an_unregistered_class_is_a_clear_error_at_save(tmp_path):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(x)

    model = nn.Sequential(nn.Flatten(), Net())
    with pytest.raises(ConfigError, match=r"model \(Sequential\)\.modules\[1\]: its class .*Net is not registered; decorate it with @xpnn\.nn\.register"):
        model.get_config()
    with pytest.raises(ConfigError, match="is not registered"):
        xpnn.save(model, tmp_path / "a.npz")
    assert not (tmp_path / "a.npz").exists()
    # save_checkpoint still saves the weights, without an architecture; building one says why not
    save_checkpoint(tmp_path / "b.npz", model)
    checkpoint = load_checkpoint(tmp_path / "b.npz")
    assert checkpoint.architecture is None
    with pytest.raises(CheckpointError, match="holds no model architecture: its model \\(a Sequential\\) could not describe itself"):
        checkpoint.build_model()
    checkpoint.restore(nn.Sequential(nn.Flatten(), Net()))


def test_an_argument_that_is_not_data_names_the_layer_and_argument(registry):
    @registry
    class Lambda(nn.Module):
        def __init__(self, fn):
            super().__init__()
            self.fn = fn

    with pytest.raises(ConfigError, match=r"model \(Sequential\)\.modules\[1\] \(Lambda\): argument 'fn' is a function \(<function .*\), not data"):
        nn.Sequential(nn.ReLU(), Lambda(lambda x: x)).get_config()
    with pytest.raises(ConfigError, match=r"argument 'fn\[1\]' is a ndarray"):
        Lambda([1, np.zeros(2)]).get_config()
    with pytest.raises(ConfigError, match=r"argument 'fn' is nan, which JSON cannot hold"):
        Lambda(float("nan")).get_config()
    with pytest.raises(ConfigError, match=r"argument 'fn' is the class .*Net, which is not registered"):
        Lambda(type("Net", (nn.Module,), {})).get_config()


def test_a_model_changed_after_it_was_built_is_refused():
    model = models.MLP([4, 3, 2])
    model.append(nn.Softmax())
    with pytest.raises(ConfigError, match=r"model \(MLP\): its submodules changed after it was built .*put the changed model in an nn\.Sequential"):
        model.get_config()
    replaced = models.SimpleCNN(1, (4, 4), 2)
    setattr(replaced, "5", nn.Linear(128, 3))
    with pytest.raises(ConfigError, match="changed after it was built"):
        replaced.get_config()
    # a plain Sequential is described by its modules as they are now
    appended = nn.Sequential(nn.Linear(2, 2)).append(nn.ReLU())
    assert [m["class"] for m in appended.get_config()["args"]["modules"]] == ["Linear", "ReLU"]


def _nested(depth):
    config = {"class": "ReLU", "args": {}}
    for _ in range(depth):
        config = {"class": "Sequential", "args": {"modules": [config]}}
    return config


def _deep_list(depth):
    value = 1
    for _ in range(depth):
        value = [value]
    return value


def _linear(**args):
    return {"class": "Linear", "args": {"in_features": 2, "out_features": 3, **args}}


@pytest.mark.parametrize("config, message", [
    ({"class": "os.system", "args": {"command": "rm -rf /"}}, r"model: unknown class 'os\.system'; expected a registered class \(one of .*Linear"),
    ({"class": "__import__", "args": {}}, r"unknown class '__import__'"),
    ({"class": "Linear; import os", "args": {}}, r"model\['class'\]: expected a class name, found 'Linear; import os'"),
    ({"class": "Sequential", "args": {"modules": [{"class": "subprocess.Popen", "args": {}}]}}, r"model \(Sequential\)\.modules\[0\]: unknown class 'subprocess\.Popen'"),
    (_linear(command="ls"), r"model \(Linear\): unknown argument\(s\) \['command'\]; Linear takes \['in_features', 'out_features', 'bias', 'init', 'dtype'\]"),
    (_linear(xp="cuda"), r"unknown argument\(s\) \['xp'\]"),
    (_linear(generator=1), r"unknown argument\(s\) \['generator'\]"),
    ({"class": "Linear", "args": {"in_features": 2}}, r"model \(Linear\): missing argument 'out_features'"),
    (_linear(in_features="2"), r"model \(Linear\)\.in_features: expected an int, found '2'"),
    (_linear(in_features=True), r"model \(Linear\)\.in_features: expected an int, found True"),
    (_linear(bias="yes"), r"model \(Linear\)\.bias: expected a bool, found 'yes'"),
    (_linear(in_features=2.5), r"\.in_features: expected an int, found 2\.5"),
    (_linear(in_features=0), r"model: Linear refused its config's arguments: Linear: expected in_features to be a positive int, got 0"),
    (_linear(dtype="int32"), r"model: Linear refused its config's arguments: .*expected a floating dtype"),
    ({"class": "Conv2d", "args": {"in_channels": 1, "out_channels": 2, "kernel_size": [3, 3, 3]}}, r"\.kernel_size: expected an int or a pair of ints, found \[3, 3, 3\]"),
    ({"class": "MLP", "args": {"sizes": [4, "x"]}}, r"model \(MLP\)\.sizes: expected a list of ints"),
    ({"class": "MLP", "args": {"sizes": [4, 2], "activation": {"type": "os.system"}}}, r"model \(MLP\)\.activation: unknown class 'os\.system'"),
    ({"class": "Sequential", "args": {"modules": {"a": 1}}}, r"model \(Sequential\)\.modules: expected a list"),
    ({"class": "Sequential", "args": {"modules": [{"class": "ReLU", "args": {}, "code": "x"}]}}, r"modules\[0\]: expected a module config"),
    ("Linear", r"model: expected a module config \{\"class\": <name>, \"args\": \{\.\.\.\}\}, found 'Linear'"),
    ({"class": "Linear"}, r"model: expected a module config"),
    ({"class": "Linear", "args": [2, 3]}, r"model\['args'\]: expected a dict of constructor arguments, found \[2, 3\]"),
    (_nested(40), r"modules nested more than 32 deep"),
    ({"class": "Flatten", "args": {"start_dim": _deep_list(40)}}, r"lists and dicts nested more than 32 deep"),
    (_linear(in_features=10**6, out_features=10**6), r"model: the config describes 1,000,001,000,000 parameter and buffer elements, expected at most 1,073,741,824"),
    ({"class": "Sequential", "args": {"modules": [_linear()] * 10_001}}, r"more than 10,000 modules"),
    (_linear(in_features=2**80), r"expected an integer of at most"),
    (_linear(init="x" * 5000), r"expected a string of at most 1,000 characters"),
    (_linear(in_features=float("inf")), r"in_features: expected a finite number, found inf"),
    (_linear(in_features=object()), r"in_features: expected JSON data, found <object object"),
    ({"class": "Conv1d", "args": {"in_channels": 1, "out_channels": 2, "kernel_size": [3, 3]}}, r"\(Conv1d\)\.kernel_size: expected an int or a list of one int, found \[3, 3\]"),
    ({"class": "Conv1d", "args": {"in_channels": 10**5, "out_channels": 10**5, "kernel_size": 9}}, r"describes 90,000,100,000 parameter"),
    ({"class": "ConvTranspose2d", "args": {"in_channels": 10**5, "out_channels": 10**5, "kernel_size": 3}}, r"describes 90,000,100,000 parameter"),
    ({"class": "PReLU", "args": {"num_parameters": 2**31}}, r"describes 2,147,483,648 parameter"),
    ({"class": "PReLU", "args": {"init": "0.25"}}, r"\(PReLU\)\.init: expected a number, found '0\.25'"),
    ({"class": "MaxPool1d", "args": {"kernel_size": 2, "stride": [1, 1]}}, r"\(MaxPool1d\)\.stride: expected an int, a list of one int or null"),
    ({"class": "KLDivLoss", "args": {"log_target": "no"}}, r"\(KLDivLoss\)\.log_target: expected a bool, found 'no'"),
])
def test_untrusted_configs_are_refused_with_messages(config, message):
    with pytest.raises(ConfigError, match=message):
        nn.from_config(config)


def _rewrite_meta(path, edit):
    with np.load(path, allow_pickle=False) as archive:
        arrays = dict(archive)
    meta = json.loads(str(arrays["__meta__"]))
    edit(meta)
    arrays["__meta__"] = np.array(json.dumps(meta))
    np.savez(path, **arrays)


def _digits_model():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))


def test_checkpoint_architecture_is_checked_on_load_and_build(tmp_path):
    path = tmp_path / "m.npz"
    save_checkpoint(path, _digits_model())
    _rewrite_meta(path, lambda meta: meta["model"].update(architecture=5))
    with pytest.raises(CheckpointError, match=r"is corrupt: model\['architecture'\]: expected a module config"):
        load_checkpoint(path)

    save_checkpoint(path, _digits_model())
    _rewrite_meta(path, lambda meta: meta["model"]["architecture"]["args"]["modules"].__setitem__(0, {"class": "os.system", "args": {}}))
    checkpoint = load_checkpoint(path)  # readable: a class unknown here may be a user's, restorable into a model built in code
    with pytest.raises(CheckpointError, match=r"cannot build its model from the saved architecture: model \(Sequential\)\.modules\[0\]: unknown class 'os\.system'"):
        checkpoint.build_model()
    checkpoint.restore(_digits_model())

    save_checkpoint(path, _digits_model())  # an architecture far larger than the weights it came with
    _rewrite_meta(path, lambda meta: meta["model"]["architecture"]["args"]["modules"][1]["args"].update(out_features=100_000))
    with pytest.raises(CheckpointError, match=r"the config describes 6,500,170 parameter and buffer elements, expected at most 1,210"):
        load_checkpoint(path).build_model()

    save_checkpoint(path, _digits_model())  # one that does not fit its weights
    _rewrite_meta(path, lambda meta: meta["model"]["architecture"]["args"]["modules"][1]["args"].update(in_features=32))
    with pytest.raises(CheckpointError, match=r"does not fit this Sequential: 1\.weight has shape \(16, 64\) in the checkpoint but \(16, 32\)"):
        load_checkpoint(path).build_model()


def test_xpnn_load_rebuilds_a_user_built_model(tmp_path, rng):
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Dropout(0.2), nn.Linear(64, 10))
    model.to(dtype="float64")
    x = rng.standard_normal((5, 1, 8, 8))
    model(x)  # moves the running statistics
    path = xpnn.save(model, tmp_path / "model.npz", epoch=3, config={"dataset": "digits"})
    loaded = xpnn.load(path)
    assert loaded[0].weight.data.dtype == np.float64  # the saved weights' dtype
    np.testing.assert_array_equal(loaded.state_dict()["1.running_mean"], model.state_dict()["1.running_mean"])
    np.testing.assert_array_equal(loaded.eval()(x), model.eval()(x))
    assert xpnn.load(path, dtype="float32")[0].weight.data.dtype == np.float32


def test_xpnn_load_onto_a_device(tmp_path, backend, rng):
    model = models.LeNet(1, (8, 8), 10)
    xpnn.save(model, tmp_path / "lenet.npz")
    loaded = xpnn.load(tmp_path / "lenet.npz", device=backend.device)
    assert isinstance(loaded, models.LeNet) and loaded.xp is backend.xp
    x = rng.standard_normal((2, 1, 8, 8)).astype(np.float32)
    np.testing.assert_allclose(xb.to_numpy(loaded(backend.asarray(x))), model(x), rtol=1e-5, atol=1e-6)


def test_print_checkpoint_is_a_short_summary(tmp_path):
    from xpnn import optim

    model = models.SimpleCNN(1, (28, 28), 10)
    optimizer = optim.Adam(model.parameters())
    save_checkpoint(tmp_path / "model.npz", model, optimizer, epoch=2, config={"dataset": "mnist", "lr": 0.001, "epochs": 5})
    text = str(load_checkpoint(tmp_path / "model.npz"))
    assert len(text) < 500, text
    assert text == repr(load_checkpoint(tmp_path / "model.npz"))
    for fragment in ["model.npz", "epoch=2", "model=SimpleCNN (804,314 values in 6 arrays, architecture saved)", "optimizer=Adam", "config keys: dataset, lr, epochs"]:
        assert fragment in text
    assert "\n" not in text


def test_xpnn_eval_a_user_built_model(tmp_path, capsys):
    xpnn.manual_seed(0)
    model = _digits_model()
    save_checkpoint(tmp_path / "mine.npz", model, epoch=1, config={"dataset": "digits"})
    assert main(["eval", str(tmp_path / "mine.npz"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["samples"] == 360 and len(result["confusion_matrix"]) == 10 and result["epoch"] == 1
    assert main(["eval", str(tmp_path / "mine.npz")]) == 0
    assert "mine.npz: Sequential trained 1 epoch on digits" in capsys.readouterr().out


def test_xpnn_eval_a_model_checkpoint_of_a_fit(tmp_path, capsys):
    from xpnn import optim
    from xpnn.data import DataLoader, load_dataset
    from xpnn.train import ModelCheckpoint, Trainer

    xpnn.manual_seed(0)
    x, y = load_dataset("digits", train=True).arrays()
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 10))
    trainer = Trainer(model, optim.Adam(model.parameters(), lr=0.01), verbose=False)
    trainer.fit(DataLoader((x, y), batch_size=64, shuffle=True), epochs=2, callbacks=[ModelCheckpoint(tmp_path / "best.npz", config={"dataset": "digits"})])
    assert main(["eval", str(tmp_path / "best.npz"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.8
    # resuming through the Python API: the rebuilt model takes the optimizer state
    checkpoint = load_checkpoint(tmp_path / "best.npz")
    rebuilt = checkpoint.build_model()
    optimizer = optim.Adam(rebuilt.parameters(), lr=0.01)
    checkpoint.restore(rebuilt, optimizer)
    assert checkpoint.epoch == 2


def test_xpnn_eval_refuses_a_model_it_cannot_rebuild(tmp_path, capsys):
    class Net(nn.Sequential):
        def __init__(self):
            super().__init__(nn.Flatten(), nn.Linear(64, 10))

    save_checkpoint(tmp_path / "net.npz", Net(), config={"dataset": "digits"})
    assert main(["eval", str(tmp_path / "net.npz")]) == 2
    err = capsys.readouterr().err
    assert "holds no model architecture: its model (a Net) could not describe itself" in err and len(err.strip().splitlines()) == 1

    save_checkpoint(tmp_path / "wide.npz", nn.Sequential(nn.Flatten(), nn.Linear(64, 3)), config={"dataset": "digits"})
    assert main(["eval", str(tmp_path / "wide.npz")]) == 2
    assert "its model gives outputs of shape (360, 3) on the digits test split, expected (N, 10) class scores" in capsys.readouterr().err


def test_every_registered_xpnn_class_has_argument_kinds():
    """An untrusted config of any of xpnn's own classes gets its arguments checked before building."""
    from xpnn.nn import architecture

    own = {name for name, cls in nn.registered().items() if cls.__module__.startswith("xpnn.")}
    assert own - set(architecture._KINDS) == set()

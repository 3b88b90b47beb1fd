"""Composition without autograd (issue 16): Residual, Parallel, ModuleList and ModuleDict route
gradients to every branch and add them where branches meet; they register their members (state_dict
names as PyTorch's), round-trip through get_config/from_config, show in summary, obey no_grad and
move with .to. A small residual CNN is checked end to end: gradcheck in float64, training on digits,
and outputs and gradients equal to a hand-written torch equivalent with the same weights."""

import json
from collections import OrderedDict

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb, nn
from xpnn.errors import ArgumentTypeError, CallOrderError, ConfigError, ShapeError

from gradcheck import check_layer


def block(cin, cout, d=None):
    """Conv-BN-ReLU-Conv-BN, with a 1x1 Conv2d shortcut when the channels change."""
    body = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, xp=d), nn.BatchNorm2d(cout, xp=d), nn.ReLU(),
                         nn.Conv2d(cout, cout, 3, padding=1, xp=d), nn.BatchNorm2d(cout, xp=d))
    return nn.Residual(body, nn.Conv2d(cin, cout, 1, xp=d) if cin != cout else None)


def residual_cnn(d=None, cin=1, width=4, classes=10):
    return nn.Sequential(
        nn.Conv2d(cin, width, 3, padding=1, xp=d), nn.BatchNorm2d(width, xp=d), nn.ReLU(),
        block(width, width, d), nn.ReLU(),
        block(width, 2 * width, d), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, classes, xp=d),
    )


def grads(model):
    return {name: xb.to_numpy(p.grad).copy() for name, p in model.named_parameters()}


# ---- Residual ------------------------------------------------------------------------------


def test_residual_identity_and_projection_gradcheck(backend, rng):
    check_layer(block(2, 2), rng.normal(size=(2, 2, 4, 4)), backend, rng)
    check_layer(block(2, 3), rng.normal(size=(2, 2, 4, 4)), backend, rng)
    check_layer(nn.Residual(nn.Linear(3, 3), nn.Identity()), rng.normal(size=(4, 3)), backend, rng)


def test_residual_forward_is_body_plus_shortcut(backend, rng):
    body, shortcut = nn.Linear(3, 2, xp=backend.device), nn.Linear(3, 2, xp=backend.device)
    x = backend.asarray(rng.normal(size=(4, 3)), np.float32)
    y = nn.Residual(body, shortcut)(x)
    np.testing.assert_allclose(xb.to_numpy(y), xb.to_numpy(body(x)) + xb.to_numpy(shortcut(x)), rtol=1e-6)
    tanh = nn.Tanh()
    np.testing.assert_allclose(xb.to_numpy(nn.Residual(tanh)(x)), np.tanh(xb.to_numpy(x)) + xb.to_numpy(x), rtol=1e-6)


def test_residual_cnn_gradcheck(backend, rng):
    if backend.name.startswith("array_api_strict"):
        pytest.skip("the blocks' gradchecks above cover array_api_strict; the whole CNN's 400 elements take ~10 s there")
    check_layer(residual_cnn(width=2, classes=2), rng.normal(size=(2, 1, 3, 3)), backend, rng)


def test_backward_params_gives_the_parameter_gradients_of_backward(backend, rng):
    """Trainer's path: a model whose first layers are containers fed with data."""
    for make in (lambda: nn.Sequential(block(2, 3), nn.ReLU(), nn.Flatten()),
                 lambda: nn.Sequential(nn.Parallel(block(2, 2), nn.Conv2d(2, 1, 1), merge="concat"), nn.Flatten()),
                 lambda: nn.Parallel(nn.Conv2d(2, 2, 3, padding=1), nn.Identity(), merge="sum")):
        model = make().to(backend.device, dtype="float64")
        x = backend.asarray(rng.normal(size=(2, 2, 4, 4)), np.float64)
        y = model(x)
        g = backend.asarray(rng.normal(size=tuple(y.shape)), np.float64)
        model.zero_grad()
        model.backward(g)
        full = grads(model)
        model(x)
        model.zero_grad()
        assert model.backward_params(g) is None
        for name, value in grads(model).items():
            np.testing.assert_allclose(value, full[name], rtol=1e-12, atol=1e-12, err_msg=name)


def test_residual_state_dict_names_are_pytorchs():
    model = nn.Sequential(block(1, 2), block(2, 2))
    names = list(model.state_dict())
    assert names[:6] == ["0.body.0.weight", "0.body.0.bias", "0.body.1.weight", "0.body.1.bias", "0.body.3.weight", "0.body.3.bias"]
    assert "0.shortcut.weight" in names and "0.shortcut.bias" in names and not any(n.startswith("1.shortcut") for n in names)
    assert "1.body.4.running_var" in names


def test_residual_refuses_bad_arguments_and_shapes(rng):
    with pytest.raises(ArgumentTypeError, match="Residual: expected a Module for body, got function"):
        nn.Residual(lambda x: x)
    with pytest.raises(ArgumentTypeError, match="Residual: expected a Module for shortcut, got int"):
        nn.Residual(nn.ReLU(), 1)
    shared = nn.Conv2d(2, 2, 1)
    with pytest.raises(ConfigError, match=r"Residual: the same Conv2d object is in both 'body' and 'shortcut'; .*build a second one"):
        nn.Residual(nn.Sequential(shared, nn.ReLU()), shared)
    x = rng.normal(size=(2, 2, 4, 4)).astype(np.float32)
    with pytest.raises(ShapeError, match=r"Residual\(shortcut=identity\): the body's output has shape \(2, 3, 4, 4\) but the input "
                                         r"\(identity shortcut\) has shape \(2, 2, 4, 4\); .*e\.g\. a 1x1 Conv2d"):
        nn.Residual(nn.Conv2d(2, 3, 3, padding=1))(x)
    with pytest.raises(ShapeError, match=r"Residual\(\): the body's output has shape \(2, 3, 4, 4\) but the shortcut's output has shape \(2, 3, 2, 2\)"):
        nn.Residual(nn.Conv2d(2, 3, 3, padding=1), nn.Conv2d(2, 3, 1, stride=2))(x)
    with pytest.raises(CallOrderError, match=r"Residual\(shortcut=identity\): backward called before forward"):
        nn.Residual(nn.ReLU()).backward(x)


# ---- Parallel ------------------------------------------------------------------------------


def test_parallel_concat_and_sum_gradcheck(backend, rng):
    x = rng.normal(size=(2, 2, 4, 4))
    check_layer(nn.Parallel(nn.Conv2d(2, 3, 1), nn.Sequential(nn.Conv2d(2, 1, 3, padding=1), nn.Tanh()), nn.Identity()), x, backend, rng)
    check_layer(nn.Parallel(nn.Conv2d(2, 2, 3, padding=1), nn.Conv2d(2, 2, 1), nn.Identity(), merge="sum"), x, backend, rng)
    check_layer(nn.Parallel(nn.Linear(3, 2), nn.Linear(3, 4), dim=-1), rng.normal(size=(2, 5, 3)), backend, rng)
    check_layer(nn.Parallel(nn.Linear(3, 3), nn.Tanh(), dim=0), rng.normal(size=(2, 3)), backend, rng)


def test_parallel_outputs(backend, rng):
    a, b = nn.Linear(3, 2, xp=backend.device), nn.Linear(3, 4, xp=backend.device)
    x = backend.asarray(rng.normal(size=(5, 3)), np.float32)
    cat = xb.to_numpy(nn.Parallel(a, b)(x))
    np.testing.assert_allclose(cat, np.concatenate([xb.to_numpy(a(x)), xb.to_numpy(b(x))], axis=1), rtol=1e-6)
    c = nn.Linear(3, 2, xp=backend.device)
    total = xb.to_numpy(nn.Parallel(OrderedDict(left=a, right=c), merge="sum")(x))
    np.testing.assert_allclose(total, xb.to_numpy(a(x)) + xb.to_numpy(c(x)), rtol=1e-6)
    only = nn.Parallel(a)
    np.testing.assert_array_equal(xb.to_numpy(only(x)), xb.to_numpy(a(x)))
    assert tuple(only.backward(backend.xp.ones((5, 2), dtype=backend.xp.float32, device=backend.place)).shape) == (5, 3)


def test_parallel_refuses_bad_arguments_and_shapes(rng):
    with pytest.raises(ConfigError, match="Parallel: expected at least one branch, got none"):
        nn.Parallel()
    with pytest.raises(ConfigError, match=r"Parallel: expected merge to be one of \['concat', 'sum'\], got 'add'"):
        nn.Parallel(nn.ReLU(), merge="add")
    with pytest.raises(ConfigError, match="Parallel: expected dim to be an int, got 1.5"):
        nn.Parallel(nn.ReLU(), dim=1.5)
    with pytest.raises(ArgumentTypeError, match="Parallel: expected a Module for branch 1, got str"):
        nn.Parallel(nn.ReLU(), "relu")
    relu = nn.ReLU()
    with pytest.raises(ConfigError, match=r"Parallel: the same ReLU object is in both '0' and '1'"):
        nn.Parallel(relu, nn.Sequential(nn.Tanh(), relu))
    x = rng.normal(size=(2, 3)).astype(np.float32)
    with pytest.raises(ShapeError, match=r"Parallel\(merge='sum'\): expected the branches' outputs to have one shape to sum, got 0: \(2, 2\), 1: \(2, 3\)"):
        nn.Parallel(nn.Linear(3, 2), nn.Identity(), merge="sum")(x)
    with pytest.raises(ShapeError, match=r"Parallel\(merge='concat', dim=0\): expected the branches' outputs to agree in every dimension but dim=0"):
        nn.Parallel(nn.Linear(3, 2), nn.Identity(), dim=0)(x)
    with pytest.raises(ShapeError, match=r"Parallel\(merge='concat', dim=2\): expected branch outputs with one number of dimensions, including dim=2"):
        nn.Parallel(nn.Identity(), dim=2)(x)
    with pytest.raises(ShapeError, match=r"including dim=1, got 0: \(2, 3\), 1: \(6,\)"):
        nn.Parallel(nn.Identity(), nn.Flatten(0))(x)


# ---- ModuleList and ModuleDict ------------------------------------------------------------


class Tower(nn.Module):
    """A user's module over a ModuleList built in a loop and a ModuleDict of heads."""

    def __init__(self, width=3, depth=2, xp=None):
        super().__init__(xp)
        self.layers = nn.ModuleList()
        for _ in range(depth):
            self.layers.append(nn.Linear(width, width, xp=xp))
            self.layers.append(nn.Tanh())
        self.heads = nn.ModuleDict({"score": nn.Linear(width, 1, xp=xp), "class": nn.Linear(width, 2, xp=xp)})

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return self.xp.concat([self.heads["score"](x), self.heads["class"](x)], axis=1)

    def backward(self, grad):
        g = self.heads["score"].backward(grad[:, :1]) + self.heads["class"].backward(grad[:, 1:])
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g


@pytest.fixture
def tower_registered():
    nn.register(Tower, name="tests.Tower")
    yield Tower
    from xpnn.nn import architecture
    architecture._NAMES.pop(architecture._REGISTRY.pop("tests.Tower"), None)


def test_module_list_behaves_like_pytorchs():
    a, b, c, d = nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 3), nn.Tanh()
    ml = nn.ModuleList([a, b])
    assert len(ml) == 2 and list(ml) == [a, b] and ml[0] is a and ml[-1] is b and b in ml and c not in ml
    ml.append(c).extend([d])
    assert [type(m).__name__ for m in ml] == ["Linear", "ReLU", "Linear", "Tanh"]
    assert isinstance(ml[1:3], nn.ModuleList) and list(ml[1:3]) == [b, c]
    ml.insert(1, nn.Sigmoid())
    assert list(ml._modules) == ["0", "1", "2", "3", "4"] and type(ml[1]).__name__ == "Sigmoid"
    del ml[1]
    assert list(ml) == [a, b, c, d] and list(ml._modules) == ["0", "1", "2", "3"]
    ml[1] = nn.GELU()
    assert type(ml[1]).__name__ == "GELU" and not hasattr(ml, "4")
    assert ml.pop() is d and len(ml) == 3
    del ml[0:1]
    assert list(ml.state_dict()) == ["1.weight", "1.bias"]
    ml += [nn.ReLU()]
    assert len(ml + nn.ModuleList([nn.ReLU()])) == 4 and len(ml) == 3
    assert list(ml.state_dict()) == ["1.weight", "1.bias"] and ml.num_parameters() == 9


def test_module_list_and_dict_refuse_bad_use():
    ml = nn.ModuleList([nn.ReLU()])
    with pytest.raises(IndexError, match="ModuleList: index 1 is out of range for 1 modules"):
        ml[1]
    with pytest.raises(ArgumentTypeError, match="ModuleList: expected an int index or a slice, got str"):
        ml["0"]
    with pytest.raises(ArgumentTypeError, match="ModuleList.append: expected a Module, got int"):
        ml.append(3)
    with pytest.raises(ArgumentTypeError, match="ModuleList.extend: expected an iterable of Modules, got Linear"):
        ml.extend(nn.Linear(2, 2))
    with pytest.raises(NotImplementedError, match="ModuleList holds modules but has no forward of its own"):
        ml(np.zeros((2, 2)))
    with pytest.raises(NotImplementedError, match="ModuleList has no backward of its own"):
        ml.backward(np.zeros((2, 2)))
    md = nn.ModuleDict()
    with pytest.raises(ConfigError, match=r"ModuleDict: expected a non-empty key without '\.', got 'a\.b'"):
        md["a.b"] = nn.ReLU()
    with pytest.raises(ConfigError, match="ModuleDict: the key 'training' is already an attribute of ModuleDict"):
        md["training"] = nn.ReLU()
    with pytest.raises(ArgumentTypeError, match="ModuleDict: expected a string key, got int 1"):
        md[1] = nn.ReLU()
    with pytest.raises(ArgumentTypeError, match="ModuleDict: expected a Module for key 'x', got float"):
        md["x"] = 1.0
    with pytest.raises(ArgumentTypeError, match=r"ModuleDict.update: expected \(name, Module\) pairs, got 'ab' at position 0"):
        md.update(["ab"])
    with pytest.raises(KeyError):
        md["missing"]
    with pytest.raises(NotImplementedError, match="ModuleDict holds modules but has no forward"):
        md(np.zeros(2))


def test_module_dict_behaves_like_pytorchs():
    conv, act = nn.Conv2d(1, 2, 3), nn.ReLU()
    md = nn.ModuleDict([("conv", conv), ("act", act)])
    assert list(md) == list(md.keys()) == ["conv", "act"] and list(md.values()) == [conv, act]
    assert md["conv"] is conv and "act" in md and "pool" not in md and len(md) == 2
    md.update({"pool": nn.MaxPool2d(2), "act": nn.Tanh()})
    assert list(md) == ["conv", "act", "pool"] and type(md["act"]).__name__ == "Tanh"
    assert list(md.state_dict()) == ["conv.weight", "conv.bias"]
    assert md.pop("conv") is conv and list(md) == ["act", "pool"] and not hasattr(md, "conv")
    del md["act"]
    md.clear()
    assert len(md) == 0 and md.num_parameters() == 0


def test_user_module_over_module_list_and_dict(backend, rng, tower_registered):
    tower = Tower(xp=backend.device)
    assert list(tower.state_dict()) == ["layers.0.weight", "layers.0.bias", "layers.2.weight", "layers.2.bias",
                                        "heads.score.weight", "heads.score.bias", "heads.class.weight", "heads.class.bias"]
    check_layer(tower, rng.normal(size=(4, 3)), backend, rng)
    table = tower.summary(3)
    assert [(r.name, r.depth) for r in table.rows] == [("Tower", 0), ("layers.0", 1), ("layers.1", 1), ("layers.2", 1),
                                                       ("layers.3", 1), ("heads.score", 1), ("heads.class", 1)]
    assert "  heads.class (Linear)" in table and table.total_params == tower.num_parameters()
    # built by its constructor (the appends in __init__ count), so it is described by its arguments
    config = tower.get_config()
    assert config == {"class": "tests.Tower", "args": {"width": 3, "depth": 2}}
    rebuilt = nn.from_config(json.loads(json.dumps(config)), device=backend.device)
    rebuilt.load_state_dict(tower.state_dict())
    x = backend.asarray(rng.normal(size=(4, 3)), np.float64)
    np.testing.assert_array_equal(xb.to_numpy(rebuilt.to(dtype="float64")(x)), xb.to_numpy(tower(x)))
    tower.layers.append(nn.ReLU())  # changed after it was built: the arguments no longer describe it
    with pytest.raises(ConfigError, match=r"model \(Tower\): its submodules changed after it was built .*'layers\.4'"):
        tower.get_config()


def test_containers_round_trip_nested(backend, rng):
    inner = nn.ModuleDict({"class": nn.Linear(2, 2), "b": nn.ModuleList([nn.ReLU(), nn.Linear(2, 1)])})
    holder = nn.ModuleList([nn.Residual(nn.Sequential(nn.Linear(2, 2), nn.Tanh())), inner])
    holder.append(nn.Parallel(OrderedDict(a=nn.Linear(2, 3), b=nn.Identity()), merge="concat", dim=-1))
    config = holder.get_config()
    assert [m["class"] for m in config["args"]["modules"]] == ["Residual", "ModuleDict", "Parallel"]
    assert config["args"]["modules"][1]["args"]["modules"][0][0] == "class"  # a key a config dict cannot hold: pairs
    assert nn.check_config(config) == holder.num_parameters()
    rebuilt = nn.from_config(json.loads(json.dumps(config)), device=backend.device)
    assert rebuilt.get_config() == config
    assert list(rebuilt.state_dict()) == list(holder.state_dict()) == [
        "0.body.0.weight", "0.body.0.bias", "1.class.weight", "1.class.bias", "1.b.1.weight", "1.b.1.bias", "2.a.weight", "2.a.bias"]
    assert list(rebuilt[1]) == ["class", "b"] and isinstance(rebuilt[1]["b"], nn.ModuleList)
    assert nn.ModuleDict({"a": nn.ReLU()}).get_config() == {"class": "ModuleDict", "args": {"modules": {"a": {"class": "ReLU", "args": {}}}}}
    assert nn.from_config(nn.ModuleList().get_config()).get_config() == {"class": "ModuleList", "args": {"modules": []}}


def test_bad_container_configs_are_refused():
    with pytest.raises(ConfigError, match=r"model \(Residual\)\.body: expected a module config \{\"class\": <name>, \"args\": \{\.\.\.\}\}, found 3"):
        nn.from_config({"class": "Residual", "args": {"body": 3}})
    with pytest.raises(ConfigError, match=r"model \(Parallel\)\.merge: expected a string, found 2"):
        nn.from_config({"class": "Parallel", "args": {"branches": [{"class": "ReLU", "args": {}}], "merge": 2, "dim": 1}})
    with pytest.raises(ConfigError, match=r"model: Parallel refused its config's arguments: Parallel: expected merge to be one of"):
        nn.from_config({"class": "Parallel", "args": {"branches": [{"class": "ReLU", "args": {}}], "merge": "max", "dim": 1}})
    with pytest.raises(ConfigError, match=r"model \(ModuleList\)\.modules: expected a list or null, found 'x'"):
        nn.from_config({"class": "ModuleList", "args": {"modules": "x"}})


# ---- no_grad, devices, summary -------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda d: block(2, 3, d), lambda d: nn.Parallel(block(2, 2, d), nn.Conv2d(2, 1, 1, xp=d))],
                         ids=["residual", "parallel"])
def test_no_grad_drops_every_members_cache(backend, rng, make):
    from test_no_grad import kept_arrays

    model = make(backend.device).eval()
    x = backend.asarray(rng.normal(size=(2, 2, 4, 4)), np.float32)
    cached = xb.to_numpy(model(x))
    assert any(kept_arrays(m) for m in model.modules())
    with xpnn.no_grad():
        free = xb.to_numpy(model(x))
    np.testing.assert_array_equal(free, cached)
    assert [type(m).__name__ for m in model.modules() if kept_arrays(m)] == []
    with pytest.raises(CallOrderError, match=rf"{type(model).__name__}\(.*\): backward needs the cache of a forward run with gradients enabled"):
        model.backward(backend.xp.ones(tuple(free.shape), dtype=backend.xp.float32, device=backend.place))


def test_to_moves_every_member(backend, rng):
    model = nn.Sequential(block(1, 2), nn.Parallel(nn.Conv2d(2, 1, 1), nn.Identity()))
    holder = nn.ModuleDict({"net": model, "extra": nn.ModuleList([nn.Linear(2, 2)])})
    holder.to(backend.device, dtype="float64")
    assert all(m.xp is backend.xp and m.device == backend.place for m in holder.modules())
    assert all(xb.device_of(p.data) == xb.device_of(p.grad) == backend.place or backend.place is None for p in holder.parameters())
    x = backend.asarray(rng.normal(size=(2, 1, 4, 4)), np.float64)
    y = model(x)
    assert tuple(y.shape) == (2, 3, 4, 4) and xb.device_of(y) == xb.device_of(x)
    assert tuple(model.backward(backend.xp.ones_like(y)).shape) == (2, 1, 4, 4)


def test_summary_of_a_residual_model():
    model = nn.Sequential(block(1, 2), nn.Parallel(nn.Conv2d(2, 1, 1), nn.Identity()), nn.Residual(nn.ReLU()))
    table = model.summary((1, 4, 4))
    assert [(r.name, r.type, r.depth, r.output_shape) for r in table.rows] == [
        ("Sequential", "Sequential", 0, (-1, 3, 4, 4)),
        ("0", "Residual", 1, (-1, 2, 4, 4)),
        ("body", "Sequential", 2, (-1, 2, 4, 4)),
        ("0", "Conv2d", 3, (-1, 2, 4, 4)), ("1", "BatchNorm2d", 3, (-1, 2, 4, 4)), ("2", "ReLU", 3, (-1, 2, 4, 4)),
        ("3", "Conv2d", 3, (-1, 2, 4, 4)), ("4", "BatchNorm2d", 3, (-1, 2, 4, 4)),
        ("shortcut", "Conv2d", 2, (-1, 2, 4, 4)),
        ("1", "Parallel", 1, (-1, 3, 4, 4)), ("0", "Conv2d", 2, (-1, 1, 4, 4)), ("1", "Identity", 2, (-1, 2, 4, 4)),
        ("2", "Residual", 1, (-1, 3, 4, 4)), ("body", "ReLU", 2, (-1, 3, 4, 4)),
    ]
    assert "  0 (Residual)" in table and "    shortcut (Conv2d)" in table
    assert table.total_params == model.num_parameters() == sum(r.params for r in table.rows)


def test_repr():
    assert repr(nn.Residual(nn.ReLU())) == "Residual(\n  (body): ReLU()\n)  # 0 params in total"
    assert repr(nn.Parallel(nn.Identity(), merge="sum")).startswith("Parallel(\n  (0): Identity()")
    assert nn.Parallel(nn.Identity(), merge="sum")._name() == "Parallel(merge='sum')"


# ---- the residual CNN end to end -----------------------------------------------------------


def test_residual_cnn_learns_digits(backend):
    from xpnn import optim
    from xpnn.data import load_dataset

    x_host, y_host = load_dataset("digits").arrays()
    xpnn.manual_seed(0)
    model = residual_cnn(backend.device, width=8)
    x, y = backend.asarray(x_host[:128]), backend.asarray(y_host[:128])
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = loss_fn(model(x), y)
        losses.append(float(xb.to_numpy(loss)))
        opt.zero_grad()
        model.backward_params(loss_fn.backward())  # as the Trainer does
        opt.step()
    assert losses[-1] < 0.5 * losses[0], losses


def test_residual_cnn_equals_torch(rng):
    torch = pytest.importorskip("torch")
    tnn = torch.nn

    class TorchBlock(tnn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.body = tnn.Sequential(tnn.Conv2d(cin, cout, 3, padding=1), tnn.BatchNorm2d(cout), tnn.ReLU(),
                                       tnn.Conv2d(cout, cout, 3, padding=1), tnn.BatchNorm2d(cout))
            self.shortcut = tnn.Conv2d(cin, cout, 1) if cin != cout else None

        def forward(self, x):
            return self.body(x) + (x if self.shortcut is None else self.shortcut(x))

    class TorchInception(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.a, self.b = tnn.Conv2d(c, 2, 1), tnn.Conv2d(c, 3, 3, padding=1)

        def forward(self, x):
            return torch.cat([self.a(x), self.b(x)], 1)

    width = 3
    mine = residual_cnn(width=width, classes=4)
    cnn = [tnn.Conv2d(1, width, 3, padding=1), tnn.BatchNorm2d(width), tnn.ReLU(), TorchBlock(width, width), tnn.ReLU(),
           TorchBlock(width, 2 * width), tnn.ReLU(), tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(2 * width, 4)]
    theirs = tnn.Sequential(*cnn).double()
    mine = nn.Sequential(nn.Parallel(nn.Conv2d(1, 2, 1), nn.Conv2d(1, 3, 3, padding=1)), nn.Conv2d(5, 1, 1), *mine).to(dtype="float64")
    theirs = tnn.Sequential(TorchInception(1), tnn.Conv2d(5, 1, 1), *theirs).double()
    mine_params, their_params = dict(mine.named_parameters()), dict(theirs.named_parameters())
    renamed = {k.replace(".a.", ".0.").replace(".b.", ".1.") if k.startswith("0.") else k: v for k, v in their_params.items()}
    assert set(mine_params) == set(renamed)
    for name, param in mine_params.items():
        value = renamed[name].detach().numpy()
        param.data = np.ascontiguousarray(value)  # PyTorch's layouts, Linear's (out, in) too

    x = rng.normal(size=(3, 1, 6, 6))
    y = mine(x)
    xt = torch.tensor(x, requires_grad=True)
    yt = theirs(xt)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    g = rng.normal(size=y.shape)
    mine.zero_grad()
    gx = mine.backward(g)
    yt.backward(torch.tensor(g))
    np.testing.assert_allclose(gx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    for name, param in mine_params.items():
        expected = renamed[name].grad.numpy()
        np.testing.assert_allclose(param.grad, expected, rtol=1e-9, atol=1e-12, err_msg=name)
    for name, buf in mine.named_buffers():
        np.testing.assert_allclose(buf, dict(theirs.named_buffers())[name.replace(".a.", ".0.")].numpy(), rtol=1e-10, err_msg=name)


def test_residual_sums_keep_the_batch_last_layout(rng):
    """ops.add, the Residual's sum: on NumPy the result is laid out in the first operand's memory
    order with its gaps closed (a batch-last body output, or a cropped batch-last input gradient,
    plus an NCHW array stays batch-last), with the values of ``a + b``; elsewhere, and for
    broadcasting operands, it is ``a + b``."""
    import array_api_strict

    from xpnn import ops

    batch_last = np.ascontiguousarray(rng.normal(size=(3, 5, 6, 4))).transpose(3, 0, 1, 2)  # (4, 3, 5, 6)
    cropped = np.ascontiguousarray(rng.normal(size=(3, 7, 8, 4))).transpose(3, 0, 1, 2)[:, :, 1:6, 1:7]
    nchw = rng.normal(size=(4, 3, 5, 6))
    for a in (batch_last, cropped):
        total = ops.add(a, nchw)
        np.testing.assert_array_equal(total, a + nchw)
        assert total.transpose(1, 2, 3, 0).flags.c_contiguous
        assert total is not a and not np.shares_memory(total, a)
    assert ops.add(nchw, batch_last).flags.c_contiguous
    np.testing.assert_array_equal(ops.add(nchw, np.float64(2.0)), nchw + 2.0)
    np.testing.assert_array_equal(ops.add(nchw, nchw[:1]), nchw + nchw[:1])
    strict = array_api_strict.asarray(nchw)
    np.testing.assert_array_equal(np.asarray(ops.add(strict, strict)), nchw + nchw)


def test_zero_pad_shortcut_keeps_its_input_layout_and_empty_ordered_follows_the_strides(rng):
    """ResNet's option-A shortcut hands on the memory order it got (batch-last from Conv2d), each
    way, with the values of the NCHW computation; ops.layout.empty_ordered lays a new array's axes
    out in another array's stride order on NumPy and in C order elsewhere."""
    import array_api_strict

    from xpnn import ops
    from xpnn.models import ZeroPadShortcut

    batch_last = np.ascontiguousarray(rng.normal(size=(3, 6, 5, 4))).transpose(3, 0, 1, 2)  # (4, 3, 6, 5)
    shortcut = ZeroPadShortcut(3, 5, stride=2)
    y = shortcut(batch_last)
    expected = np.concatenate([batch_last[:, :, ::2, ::2], np.zeros((4, 2, 3, 3))], axis=1)
    np.testing.assert_array_equal(y, expected)
    assert y.transpose(1, 2, 3, 0).flags.c_contiguous
    grad = np.ascontiguousarray(rng.normal(size=(5, 3, 3, 4))).transpose(3, 0, 1, 2)
    g = shortcut.backward(grad)
    expected_g = np.zeros((4, 3, 6, 5))
    expected_g[:, :, ::2, ::2] = grad[:, :3]
    np.testing.assert_array_equal(g, expected_g)
    assert g.transpose(1, 2, 3, 0).flags.c_contiguous
    nchw = ZeroPadShortcut(3, 5, stride=2)
    assert nchw(np.ascontiguousarray(batch_last)).flags.c_contiguous
    assert ops.layout.empty_ordered(rng.normal(size=(2, 3)).T, (4, 5)).T.flags.c_contiguous
    strict = ops.layout.empty_ordered(array_api_strict.asarray(batch_last), (2, 2, 2, 2))
    assert tuple(strict.shape) == (2, 2, 2, 2)

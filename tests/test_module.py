"""Module and Sequential: registration, state_dict, device moves, modes, gradient accumulation."""

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ArgumentTypeError, CheckpointError


def _mlp(device="cpu", seed=0):
    xpnn.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3)).to(device)


def test_named_parameters_and_state_dict_keys():
    model = _mlp()
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "3.weight", "3.bias"]
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    assert all(type(v) is np.ndarray for v in state.values())
    assert model.num_parameters() == 4 * 8 + 8 + 8 * 3 + 3


def test_state_dict_round_trip_across_backends(backend):
    source = _mlp(backend.device, seed=1)
    target = _mlp("cpu", seed=2)
    target.load_state_dict(source.state_dict())
    for (name, a), (_, b) in zip(source.named_parameters(), target.named_parameters()):
        np.testing.assert_array_equal(xb.to_numpy(a.data), b.data, err_msg=name)
    state = source.state_dict()
    state["0.weight"][...] = 0
    assert float(xb.to_numpy(source[0].weight.data).std()) > 0, "state_dict must return copies"


def test_load_state_dict_rejects_missing_and_wrong_shapes():
    model = _mlp()
    state = model.state_dict()
    del state["3.bias"]
    state["extra"] = np.zeros(2)
    with pytest.raises(CheckpointError, match=r"missing keys \['3.bias'\], unexpected keys \['extra'\]"):
        model.load_state_dict(state)
    state = model.state_dict()
    state["0.weight"] = np.zeros((5, 8))
    with pytest.raises(CheckpointError, match=r"0.weight expected shape \(8, 4\), got \(5, 8\)"):
        model.load_state_dict(state)


def test_to_moves_parameters_and_gradients(backend):
    model = _mlp()
    model.to(backend.device)
    assert model.xp is backend.xp
    for p in model.parameters():
        assert type(p.data) is xb.array_type(backend.xp) and type(p.grad) is xb.array_type(backend.xp)
    model.to(dtype="float64")
    assert all(p.dtype == backend.xp.float64 for p in model.parameters())


def test_train_eval_switch_every_submodule():
    model = _mlp()
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_gradients_accumulate_until_zero_grad(backend, rng):
    model = _mlp(backend.device).eval()
    x = backend.asarray(rng.normal(size=(5, 4)), np.float32)
    loss_fn = nn.CrossEntropyLoss()
    y = backend.asarray(np.array([0, 1, 2, 0, 1]))
    grads = []
    for _ in range(2):
        loss_fn(model(x), y)
        model.backward(loss_fn.backward())
        grads.append(xb.to_numpy(model[0].weight.grad).copy())
    np.testing.assert_allclose(grads[1], 2 * grads[0], rtol=1e-6)
    buffer = model[0].weight.grad
    model.zero_grad()
    assert model[0].weight.grad is buffer, "zero_grad must keep the gradient buffer"
    assert float(np.abs(xb.to_numpy(buffer)).max()) == 0.0


def test_sequential_indexing_and_append():
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
    model.append(nn.Linear(3, 1))
    assert len(model) == 3 and isinstance(model[2], nn.Linear) and isinstance(model[-1], nn.Linear)
    assert len(model[:2]) == 2
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear"]


def test_sequential_rejects_non_modules():
    with pytest.raises(ArgumentTypeError, match="Sequential: expected Module instances, got ufunc at position 1"):
        nn.Sequential(nn.Linear(2, 2), np.tanh)


def test_repr_shows_layers_and_parameter_counts():
    text = repr(nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)))
    assert "(0): Linear(in_features=784, out_features=256, bias=True)  # 200,960 params" in text
    assert "(1): ReLU()" in text
    assert text.endswith("# 203,530 params in total")


def test_custom_module_registers_attributes():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Linear(3, 4)
            self.head = nn.Linear(4, 2)
            self.register_buffer("scale", np.ones(2, dtype=np.float32))

        def forward(self, x):
            return self.head(self.body(x)) * self.scale

    net = Net()
    assert [n for n, _ in net.named_parameters()] == ["body.weight", "body.bias", "head.weight", "head.bias"]
    assert "scale" in net.state_dict()
    net.to("array_api_strict")
    assert type(net.scale) is xb.array_type(xb.resolve("array_api_strict"))
    net.head = None
    assert [n for n, _ in net.named_parameters()] == ["body.weight", "body.bias"]


def test_parameters_from_the_same_seed_are_identical_on_every_backend(backend):
    a = _mlp(backend.device, seed=11)
    b = _mlp("cpu", seed=11)
    for pa, pb in zip(a.parameters(), b.parameters()):
        np.testing.assert_array_equal(xb.to_numpy(pa.data), pb.data)


def test_backward_params_gives_the_same_parameter_gradients(backend, rng):
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3)).to(backend.device)
    x = backend.asarray(rng.normal(size=(4, 2, 3)), np.float32)
    y = backend.asarray(np.array([0, 2, 1, 1]))
    loss_fn = nn.CrossEntropyLoss()
    grads = []
    for method in ("backward", "backward_params"):
        model.zero_grad()
        loss_fn(model(x), y)
        result = getattr(model, method)(loss_fn.backward())
        assert (result is None) == (method == "backward_params")
        grads.append([xb.to_numpy(p.grad).copy() for p in model.parameters()])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


def test_zero_grad_marks_and_the_next_gradient_is_taken_not_added(backend):
    from xpnn.nn import Parameter

    xp = backend.xp
    p = Parameter(backend.asarray(np.zeros((2, 3)), np.float32))
    p.grad[...] = 5.0
    p.zero_grad()
    fresh = backend.asarray(np.full((2, 3), 2.0), np.float32)
    p.accumulate_grad(fresh)
    if xb.is_numpy(xp):
        assert p.grad is fresh  # taken as it is: no zero fill, no addition
    p.accumulate_grad(backend.asarray(np.ones((2, 3)), np.float32))
    np.testing.assert_array_equal(xb.to_numpy(p.grad), np.full((2, 3), 3.0))
    p.zero_grad()
    np.testing.assert_array_equal(xb.to_numpy(p.grad), np.zeros((2, 3)))  # reading fills the zeros
    p.accumulate_grad(backend.asarray(np.ones((2, 3)), np.float32))
    np.testing.assert_array_equal(xb.to_numpy(p.grad), np.ones((2, 3)))


def test_accumulate_after_zero_grad_copies_what_it_cannot_take(backend):
    from xpnn.nn import Parameter

    p = Parameter(backend.asarray(np.zeros((2, 3)), np.float32))
    buffer = p.grad
    p.zero_grad()
    transposed = backend.xp.matrix_transpose(backend.asarray(np.arange(6.0).reshape(3, 2), np.float32))
    p.accumulate_grad(transposed)
    assert p.grad is buffer
    np.testing.assert_array_equal(xb.to_numpy(p.grad), np.arange(6.0).reshape(3, 2).T)

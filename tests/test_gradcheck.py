"""The public gradient checker, xpnn.gradcheck (issue 15)."""

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb
from xpnn import nn
from xpnn.errors import ArgumentTypeError, XpnnError


class Square(nn.Module):
    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, grad):
        return 2 * self.x * grad


class WrongSquare(Square):
    def backward(self, grad):
        return 2.1 * self.x * grad


class WrongBiasLinear(nn.Linear):
    def backward_params(self, grad):
        result = super().backward_params(grad)
        self.bias.grad = self.bias.grad * 1.5
        return result


def test_a_layer_of_ones_own_and_xpnn_layers_pass(backend, rng):
    x = rng.normal(size=(3, 4))
    assert xpnn.gradcheck(Square(), x) is True
    model = nn.Sequential(nn.Linear(4, 5), nn.ReLU(), nn.Dropout(0.3), nn.Linear(5, 2)).to(backend.device)
    assert xpnn.gradcheck(model, backend.asarray(x, np.float32)) is True
    conv = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8, 3)).to(backend.device)
    assert xpnn.gradcheck(conv, rng.normal(size=(2, 1, 4, 4))) is True


def test_a_loss_is_checked_with_its_target(rng):
    assert xpnn.gradcheck(nn.CrossEntropyLoss(), rng.normal(size=(4, 3)), target=np.array([0, 2, 1, 2]))
    assert xpnn.gradcheck(nn.MSELoss(reduction="none"), rng.normal(size=(4, 3)), target=np.ones((4, 3), np.float32))


def test_a_wrong_input_gradient_names_module_index_and_values():
    with pytest.raises(xpnn.GradcheckError) as info:
        xpnn.gradcheck(WrongSquare(), np.ones((2, 3)))
    message = str(info.value)
    assert message.startswith("gradcheck: WrongSquare(): the gradient of the input differs from finite differences at index (")
    assert "analytic " in message and "numeric " in message and "(6 of 6 elements outside atol=1e-07 + rtol=1e-05 * |numeric|)" in message
    assert isinstance(info.value, (XpnnError, AssertionError))


def test_a_wrong_parameter_gradient_names_the_parameter():
    x = np.arange(6.0).reshape(2, 3) / 6
    with pytest.raises(xpnn.GradcheckError, match=r"^gradcheck: WrongBiasLinear\(in_features=3, out_features=2, bias=True\): the gradient of the parameter 'bias' differs from finite differences at index \((0|1),\): analytic -?[0-9.]+, numeric -?[0-9.]+ \(2 of 2 elements"):
        xpnn.gradcheck(WrongBiasLinear(3, 2), x)
    model = nn.Sequential(nn.Linear(3, 3), WrongBiasLinear(3, 2))
    with pytest.raises(xpnn.GradcheckError, match=r"the gradient of the parameter '1.bias'"):
        xpnn.gradcheck(model, x)


def test_the_module_is_left_as_it_was(rng):
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Dropout(0.5), nn.Linear(3, 2))
    model(np.ones((2, 4), np.float32))
    model.backward(np.ones((2, 2), np.float32))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    grads = [xb.to_numpy(p.grad).copy() for p in model.parameters()]
    rng_state = xpnn.random.get_rng_state()
    assert xpnn.gradcheck(model, rng.normal(size=(3, 4)))
    after = model.state_dict()
    assert all(after[k].dtype == before[k].dtype and np.array_equal(after[k], before[k]) for k in before)
    assert all(np.array_equal(xb.to_numpy(p.grad), g) for p, g in zip(model.parameters(), grads))
    assert model.training and xpnn.random.get_rng_state() == rng_state


def test_wrong_arguments_are_named():
    with pytest.raises(ArgumentTypeError, match=r"^gradcheck: expected a module with forward and backward \(an xpnn.nn.Module\), found function$"):
        xpnn.gradcheck(lambda x: x, np.ones(3))
    with pytest.raises(ArgumentTypeError, match=r"^gradcheck: expected x to be an array, found str$"):
        xpnn.gradcheck(Square(), "x")
    with pytest.raises(ArgumentTypeError, match=r"^gradcheck: expected a numeric x, found dtype <U1$"):
        xpnn.gradcheck(Square(), np.array(["a"]))

"""model.summary(input_shape) / xpnn.summary(model, input_shape): each module in call order with
its output shape and parameter count, the totals, and the model left exactly as it was."""

import numpy as np
import pytest

import xpnn
from xpnn import backend as xb, nn
from xpnn.errors import ArgumentTypeError, ConfigError, ShapeError
from xpnn.models import MLP, LeNet, SimpleCNN
from xpnn.nn import module as module_mod

LENET = """\
==============================================
Layer (type)       Output Shape        Param #
==============================================
LeNet              [-1, 10]                 --
  0 (Conv2d)       [-1, 6, 28, 28]         156
  1 (ReLU)         [-1, 6, 28, 28]          --
  2 (MaxPool2d)    [-1, 6, 14, 14]          --
  3 (Conv2d)       [-1, 16, 10, 10]      2,416
  4 (ReLU)         [-1, 16, 10, 10]         --
  5 (MaxPool2d)    [-1, 16, 5, 5]           --
  6 (Flatten)      [-1, 400]                --
  7 (Linear)       [-1, 120]            48,120
  8 (ReLU)         [-1, 120]                --
  9 (Linear)       [-1, 10]              1,210
==============================================
Total params: 51,902
Trainable params: 51,902
Non-trainable params: 0
----------------------------------------------
Input shape: [-1, 1, 28, 28]
Input size (MB, one sample): 0.00
Forward pass size (MB, one sample): 0.06
Params size (MB): 0.21
Estimated total size (MB): 0.27
=============================================="""


def _rows(table):
    return [(r.name, r.type, r.depth, r.output_shape, r.params) for r in table.rows]


def test_lenet_exact_text():
    model = LeNet()
    table = model.summary((1, 28, 28))
    assert table == LENET
    assert str(table) == repr(table) == LENET  # prints and shows in a notebook as the table
    assert xpnn.summary(model, (1, 28, 28)) == nn.summary(model, (1, 28, 28)) == LENET
    assert table.total_params == table.trainable_params == model.num_parameters() == 51_902
    assert table.params_bytes == 4 * 51_902
    assert table.forward_bytes == 4 * (2 * 6 * 28 * 28 + 6 * 14 * 14 + 2 * 16 * 10 * 10 + 16 * 5 * 5 + 400 + 2 * 120 + 10)


def test_mlp_with_a_batch_size():
    model = MLP([784, 32, 10], dropout=0.5)
    table = xpnn.summary(model, 784, batch_size=16)
    assert _rows(table) == [
        ("MLP", "MLP", 0, (16, 10), 0),
        ("0", "Flatten", 1, (16, 784), 0),
        ("1", "Linear", 1, (16, 32), 784 * 32 + 32),
        ("2", "ReLU", 1, (16, 32), 0),
        ("3", "Dropout", 1, (16, 32), 0),
        ("4", "Linear", 1, (16, 10), 330),
    ]
    assert "Input shape: [16, 784]" in table and "Forward pass size (MB, batch of 16)" in table
    assert table.total_params == model.num_parameters() == sum(r.params for r in table.rows)
    assert table.input_bytes == 16 * 784 * 4


def test_simple_cnn_rows_and_totals():
    model = SimpleCNN(1, (8, 8), 3)
    table = model.summary((1, 8, 8))
    assert [(r.type, r.output_shape) for r in table.rows] == [
        ("SimpleCNN", (-1, 3)), ("Conv2d", (-1, 8, 8, 8)), ("ReLU", (-1, 8, 8, 8)), ("Flatten", (-1, 512)),
        ("Linear", (-1, 128)), ("ReLU", (-1, 128)), ("Linear", (-1, 3)),
    ]
    assert table.total_params == model.num_parameters() == sum(r.params for r in table.rows) == 66_131
    assert "  3 (Linear)     [-1, 128]         65,664" in table


def test_nested_sequential_is_indented_by_depth():
    model = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4),
        nn.Sequential(nn.ReLU(), nn.Sequential(nn.Flatten())),
        nn.Linear(4 * 6 * 6, 5),
    )
    table = model.summary((1, 8, 8))
    assert _rows(table) == [
        ("Sequential", "Sequential", 0, (-1, 5), 0),
        ("0", "Conv2d", 1, (-1, 4, 6, 6), 40),
        ("1", "BatchNorm2d", 1, (-1, 4, 6, 6), 8),
        ("2", "Sequential", 1, (-1, 144), 0),
        ("0", "ReLU", 2, (-1, 4, 6, 6), 0),
        ("1", "Sequential", 2, (-1, 144), 0),
        ("0", "Flatten", 3, (-1, 144), 0),
        ("3", "Linear", 1, (-1, 5), 725),
    ]
    lines = table.splitlines()
    assert lines[6].startswith("  2 (Sequential)") and lines[7].startswith("    0 (ReLU)") and lines[9].startswith("      0 (Flatten)")
    assert "Buffer values (not trained): 9" in table  # running mean, variance and the batch count
    assert table.total_params == model.num_parameters() == 773


def test_a_module_called_twice_shows_both_calls_and_counts_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 3)

        def forward(self, x):
            return self.lin(self.lin(x))

    model = Twice()
    table = model.summary(3)
    assert _rows(table) == [("Twice", "Twice", 0, (-1, 3), 0), ("lin", "Linear", 1, (-1, 3), 12), ("lin", "Linear", 1, (-1, 3), None)]
    assert "(recursive)" in table and table.total_params == 12


def _snapshot(model):
    return [(m, dict(vars(m))) for m in model.modules()]


@pytest.mark.parametrize("training", [True, False])
def test_the_model_is_left_exactly_as_it_was(backend, rng, training):
    model = nn.Sequential(nn.Conv2d(1, 2, 3, xp=backend.device), nn.BatchNorm2d(2, xp=backend.device), nn.ReLU(),
                          nn.Dropout(0.5), nn.Flatten(), nn.Linear(2 * 4 * 4, 3, xp=backend.device)).train(training)
    x = backend.asarray(rng.normal(size=(4, 1, 6, 6)), np.float32)
    y = model(x)  # a forward whose cache a backward will use after the summary
    before = _snapshot(model)
    stats = [xb.to_numpy(b).copy() for b in model.buffers()]
    table = model.summary((1, 6, 6))
    assert table.rows[-1].output_shape == (-1, 3)
    for module, attributes in before:
        assert vars(module).keys() == attributes.keys()
        assert all(vars(module)[k] is v for k, v in attributes.items()), type(module).__name__
    assert all(m.training is training for m in model.modules())
    for old, new in zip(stats, model.buffers()):
        np.testing.assert_array_equal(xb.to_numpy(new), old)
    assert module_mod._tracer is None and xpnn.is_grad_enabled()
    assert tuple(model.backward(backend.xp.ones_like(y)).shape) == (4, 1, 6, 6)


def test_summary_on_every_backend(backend):
    model = LeNet(1, (8, 8), 3, xp=backend.device)
    table = model.summary((1, 8, 8), batch_size=2)
    assert table.rows[0].output_shape == (2, 3) and table.total_params == model.num_parameters()


def test_a_bad_input_shape_names_the_layer_that_failed():
    model = LeNet()
    with pytest.raises(ShapeError, match=r"summary of LeNet with input_shape \(1, 20, 20\): 7 \(Linear\) failed on an input of shape "
                                         r"\(2, 144\): Linear\(400, 120\): expected input of shape \(\.\.\., 400\), got \(2, 144\)"):
        model.summary((1, 20, 20))
    with pytest.raises(ShapeError, match=r"0 \(Conv2d\) failed on an input of shape \(2, 3, 28, 28\): Conv2d\(1, 6"):
        model.summary((3, 28, 28))
    nested = nn.Sequential(nn.Flatten(), nn.Sequential(nn.ReLU(), nn.Linear(5, 2)))
    with pytest.raises(ShapeError, match=r"1 \(Linear\) failed on an input of shape \(2, 4\)"):
        nested.summary(4)
    # a failed summary leaves the model as it was, too
    assert all(m.training for m in model.modules()) and module_mod._tracer is None and xpnn.is_grad_enabled()
    assert model[7]._x is None and "_cache_dropped" not in vars(model[7])


def test_a_user_layers_plain_exception_becomes_a_shape_error():
    class Broken(nn.Module):
        def forward(self, x):
            raise ValueError("matmul: mismatch")

    with pytest.raises(ShapeError, match=r"summary of Sequential with input_shape \(3,\): 0 \(Broken\) failed on an input of shape \(2, 3\): matmul: mismatch"):
        nn.Sequential(Broken()).summary((3,))


@pytest.mark.parametrize("shape", ["x", (), (0, 28), (1.5,), (True, 2), None])
def test_bad_arguments_are_refused(shape):
    with pytest.raises(ConfigError, match=r"summary: expected input_shape to be the shape of one sample without the batch dimension"):
        LeNet().summary(shape)


def test_bad_batch_size_and_model_are_refused():
    with pytest.raises(ConfigError, match=r"summary: expected batch_size to be a positive int or None, got 0"):
        LeNet().summary((1, 28, 28), batch_size=0)
    with pytest.raises(ArgumentTypeError, match=r"summary: expected a Module, got list"):
        xpnn.summary([], (1, 28, 28))

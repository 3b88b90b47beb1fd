"""ONNX export (``xpnn.onnx``, ``xpnn export``): every model the CLI trains and every supported
layer, checked by ``onnx.checker.check_model(full_check=True)`` and run by onnxruntime against
xpnn's eval-mode forward; dynamic batch; refusals; the CLI on a trained digits checkpoint."""

import importlib.util
import sys

import numpy as np
import pytest

import xpnn
from xpnn import models, nn
from xpnn.cli import main
from xpnn.errors import BackendUnavailableError
from xpnn.onnx import UnsupportedLayerError, export, register_converter

HAVE_ONNX = all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime"))
needs_onnx = pytest.mark.skipif(not HAVE_ONNX, reason="onnx and onnxruntime are not installed (pip install 'xpnn[onnx]')")

RTOL, ATOL = 1e-5, 1e-5  # ATOL is scaled by the output's largest magnitude (at least 1)


def _assert_close(got, want):
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL * max(1.0, float(np.abs(want).max())))


def _randomise(model, seed=0, stats=True):
    """Non-trivial weights, biases and (with ``stats``) BatchNorm running statistics: every
    parameter gets a random perturbation."""
    rng = np.random.default_rng(seed)
    for name, module in model.named_modules():
        if stats and isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) and module.track_running_stats:
            module.running_mean[...] = rng.normal(0, 0.5, module.running_mean.shape).astype(np.float32)
            module.running_var[...] = rng.uniform(0.5, 2.0, module.running_var.shape).astype(np.float32)
    for p in model.parameters():
        p.data[...] = p.data + rng.normal(0, 0.1, p.data.shape).astype(p.data.dtype)
    return model


def _run(path_or_proto, x):
    import onnxruntime as ort

    source = path_or_proto if isinstance(path_or_proto, str) else path_or_proto.SerializeToString()
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x})[0]


def _expected(model, x):
    model.eval()
    with xpnn.no_grad():
        return np.asarray(model(x))


def _check(model, shape, batches=(1, 5), opset=17, seed=0):
    """Export on a batch of 2; the graph runs batches of 1 and 5 like xpnn. Returns the largest
    absolute difference."""
    rng = np.random.default_rng(seed)
    proto = export(model, rng.standard_normal((2, *shape)).astype(np.float32), opset=opset)
    worst = 0.0
    for n in batches:
        x = rng.standard_normal((n, *shape)).astype(np.float32)
        got, want = _run(proto, x), _expected(model, x)
        assert got.shape == want.shape
        _assert_close(got, want)
        worst = max(worst, float(np.abs(got - want).max()))
    return worst


# ---- every model the CLI can train ------------------------------------------------------------------

MODEL_SHAPES = {"mlp": (1, 8, 8), "cnn": (1, 8, 8), "lenet": (1, 28, 28), "resnet8": (1, 8, 8), "resnet20": (3, 16, 16),
                "resnet32": (3, 8, 8), "resnet56": (3, 8, 8)}


@needs_onnx
@pytest.mark.parametrize("name", list(models.MODELS))
def test_every_cli_model_matches_onnxruntime(name):
    assert set(MODEL_SHAPES) == set(models.MODELS)
    shape = MODEL_SHAPES[name]
    model = models.build_model(name, shape, 10)
    if name.startswith("resnet"):  # BatchNorm statistics from train-mode forwards (random ones blow a deep net up)
        model.train()
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.momentum = None  # the running statistics: the mean of the batches'
        for seed in range(3):
            model(np.random.default_rng(seed).standard_normal((8, *shape)).astype(np.float32) * 2 + 0.5)
        assert float(np.abs(model.bn1.running_mean).max()) > 0.01  # the stem's BatchNorm moved
    _randomise(model, stats=not name.startswith("resnet"))
    model.train()
    export(model, (2, *shape))
    assert all(m.training for m in model.modules())  # export puts the model in eval form, then back
    _check(model, shape)


# ---- every supported layer --------------------------------------------------------------------------

def _layers():
    cases = [
        ("Linear", lambda: nn.Linear(6, 4), (6,)),
        ("Linear square", lambda: nn.Linear(5, 5), (5,)),
        ("Linear no bias", lambda: nn.Linear(6, 3, bias=False), (6,)),
        ("Linear 3-D input", lambda: nn.Linear(6, 4), (3, 6)),
        ("Linear square 3-D", lambda: nn.Linear(4, 4), (2, 4)),
        ("Conv2d", lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, dilation=2), (3, 9, 8)),
        ("Conv2d groups", lambda: nn.Conv2d(4, 6, (3, 2), stride=(1, 2), padding=(1, 0), groups=2, bias=False), (4, 7, 7)),
        ("Conv1d", lambda: nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2), (4, 11)),
        ("ConvTranspose2d", lambda: nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), (4, 5, 4)),
        ("ConvTranspose2d dilated", lambda: nn.ConvTranspose2d(3, 2, (2, 3), stride=(2, 1), dilation=(1, 2), padding=(0, 1)), (3, 4, 5)),
        ("ConvTranspose2d output_padding >= stride", lambda: nn.ConvTranspose2d(3, 2, 3, stride=1, dilation=2, output_padding=1), (3, 4, 4)),
        ("MaxPool2d", lambda: nn.MaxPool2d(3, stride=2, padding=1), (2, 9, 8)),
        ("MaxPool2d dilated", lambda: nn.MaxPool2d(2, dilation=2), (2, 8, 8)),
        ("MaxPool1d", lambda: nn.MaxPool1d(3, stride=2, padding=1), (3, 10)),
        ("AvgPool2d", lambda: nn.AvgPool2d(3, stride=2, padding=1), (2, 9, 8)),
        ("AvgPool2d no pad count", lambda: nn.AvgPool2d((3, 2), stride=(2, 1), padding=1, count_include_pad=False), (2, 7, 6)),
        ("AvgPool1d", lambda: nn.AvgPool1d(3, stride=2, padding=1, count_include_pad=False), (3, 10)),
        ("AdaptiveAvgPool2d global", lambda: nn.AdaptiveAvgPool2d(1), (3, 5, 6)),
        ("AdaptiveAvgPool2d tiling", lambda: nn.AdaptiveAvgPool2d((2, 3)), (3, 6, 6)),
        ("AdaptiveAvgPool2d overlapping", lambda: nn.AdaptiveAvgPool2d((4, 5)), (2, 7, 9)),
        ("AdaptiveAvgPool2d None", lambda: nn.AdaptiveAvgPool2d((None, 2)), (2, 3, 5)),
        ("BatchNorm1d", lambda: nn.BatchNorm1d(6), (6,)),
        ("BatchNorm1d 3-D", lambda: nn.BatchNorm1d(4, eps=1e-3), (4, 5)),
        ("BatchNorm2d", lambda: nn.BatchNorm2d(3), (3, 4, 5)),
        ("BatchNorm2d no affine", lambda: nn.BatchNorm2d(3, affine=False), (3, 4, 4)),
        ("LayerNorm", lambda: nn.LayerNorm(6), (6,)),
        ("LayerNorm 2 dims", lambda: nn.LayerNorm((4, 5), eps=1e-3), (3, 4, 5)),
        ("LayerNorm no affine", lambda: nn.LayerNorm(5, elementwise_affine=False), (2, 5)),
        ("LayerNorm no bias", lambda: nn.LayerNorm(5, bias=False), (5,)),
        ("GroupNorm", lambda: nn.GroupNorm(2, 4), (4, 5, 5)),
        ("GroupNorm no affine", lambda: nn.GroupNorm(3, 6, affine=False, eps=1e-3), (6, 7)),
        ("ReLU", nn.ReLU, (3, 4)),
        ("LeakyReLU", lambda: nn.LeakyReLU(0.2), (3, 4)),
        ("Sigmoid", nn.Sigmoid, (3, 4)),
        ("Tanh", nn.Tanh, (3, 4)),
        ("GELU", nn.GELU, (3, 4)),
        ("GELU tanh", lambda: nn.GELU("tanh"), (3, 4)),
        ("ELU", lambda: nn.ELU(0.7), (3, 4)),
        ("Softplus", nn.Softplus, (3, 4)),
        ("Softplus beta threshold", lambda: nn.Softplus(beta=2.0, threshold=1.5), (3, 4)),
        ("Mish", nn.Mish, (3, 4)),
        ("Hardswish", nn.Hardswish, (3, 4)),
        ("Hardtanh", lambda: nn.Hardtanh(-0.5, 1.5), (3, 4)),
        ("ReLU6", nn.ReLU6, (3, 4)),
        ("PReLU", nn.PReLU, (3, 4)),
        ("PReLU per channel", lambda: nn.PReLU(4, init=0.1), (4, 3, 3)),
        ("Softsign", nn.Softsign, (3, 4)),
        ("SiLU", nn.SiLU, (3, 4)),
        ("Softmax", lambda: nn.Softmax(dim=1), (6,)),
        ("Softmax inner axis", lambda: nn.Softmax(dim=2), (3, 4, 5)),
        ("LogSoftmax", nn.LogSoftmax, (3, 7)),
        ("Flatten", nn.Flatten, (3, 4, 5)),
        ("Flatten from 2", lambda: nn.Flatten(2), (3, 4, 5)),
        ("Flatten middle", lambda: nn.Flatten(1, 2), (3, 4, 5)),
        ("Flatten batch too", lambda: nn.Flatten(0), (3, 4)),
        ("Dropout", lambda: nn.Dropout(0.5), (3, 4)),
        ("Dropout2d", lambda: nn.Dropout2d(0.5), (3, 4, 4)),
        ("Identity", nn.Identity, (3, 4)),
        ("Upsample nearest x2", lambda: nn.Upsample(scale_factor=2), (2, 3, 4)),
        ("Upsample nearest size", lambda: nn.Upsample(size=(5, 7)), (2, 3, 4)),
        ("Upsample nearest 2.5", lambda: nn.Upsample(scale_factor=2.5), (2, 3, 4)),
        ("Upsample bilinear", lambda: nn.Upsample(scale_factor=1.5, mode="bilinear"), (2, 4, 5)),
        ("Upsample bilinear corners", lambda: nn.Upsample(size=(6, 3), mode="bilinear", align_corners=True), (2, 4, 5)),
        ("Residual identity", lambda: nn.Residual(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.BatchNorm2d(3))), (3, 5, 5)),
        ("Residual shortcut", lambda: nn.Residual(nn.Conv2d(3, 4, 3, stride=2, padding=1), nn.Conv2d(3, 4, 1, stride=2)), (3, 6, 6)),
        ("Parallel concat", lambda: nn.Parallel(nn.Conv2d(3, 2, 1), nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.ReLU())), (3, 4, 4)),
        ("Parallel concat last", lambda: nn.Parallel(nn.Linear(4, 2), nn.Linear(4, 3), dim=-1), (4,)),
        ("Parallel sum", lambda: nn.Parallel(nn.Linear(4, 3), nn.Sequential(nn.Linear(4, 3), nn.Tanh()), nn.Linear(4, 3), merge="sum"), (4,)),
        ("Parallel one branch", lambda: nn.Parallel(nn.Tanh()), (4,)),
        ("ZeroPadShortcut", lambda: models.ZeroPadShortcut(3, 5, 2), (3, 5, 6)),
        ("ZeroPadShortcut stride 3", lambda: models.ZeroPadShortcut(2, 2, 3), (2, 7, 7)),
        ("ZeroPadShortcut stride 1", lambda: models.ZeroPadShortcut(2, 4, 1), (2, 3, 3)),
        ("Sequential nested", lambda: nn.Sequential(nn.Sequential(nn.Linear(4, 5), nn.ReLU()), nn.Sequential(nn.Linear(5, 2))), (4,)),
    ]
    return [pytest.param(factory, shape, id=name) for name, factory, shape in cases]


@needs_onnx
@pytest.mark.parametrize(("factory", "shape"), _layers())
def test_each_layer_matches_onnxruntime(factory, shape):
    assert _check(_randomise(factory()), shape) < 1e-4


def test_every_registered_layer_is_covered_or_refused():
    """Each layer, container and model xpnn registers (losses aside) has a converter: an ONNX
    form or a stated refusal."""
    from xpnn.onnx.export import _load_converters, converter_for_class

    _load_converters()
    classes = [cls for cls in nn.registered().values() if not cls.__name__.endswith("Loss") and cls.__module__.startswith("xpnn.")]
    assert len(classes) > 40
    assert [cls.__name__ for cls in classes if converter_for_class(cls) is None] == []


@needs_onnx
@pytest.mark.parametrize("opset", [17, 18, 20])
def test_opsets_gelu_mish(opset):
    """Gelu (20) and Mish (18) are operators where the opset has them, formulas below."""
    import onnx

    if opset > onnx.defs.onnx_opset_version():
        pytest.skip(f"this onnx knows opsets up to {onnx.defs.onnx_opset_version()}")
    model = nn.Sequential(nn.GELU(), nn.Mish(), nn.GELU("tanh"))
    assert _check(model, (3, 4), opset=opset) < 1e-5
    ops = {node.op_type for node in export(model, (2, 3, 4), opset=opset).graph.node}
    assert ("Gelu" in ops) == (opset >= 20) and ("Mish" in ops) == (opset >= 18)


@needs_onnx
def test_graph_form(tmp_path):
    """Gemm with the weight as an initializer, a named dynamic batch, eval form, no training ops."""
    import onnx

    model = _randomise(models.build_model("resnet8", (1, 8, 8), 10))
    path = tmp_path / "m.onnx"
    export(model, (1, 1, 8, 8), str(path))
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = [node.op_type for node in proto.graph.node]
    assert ops.count("BatchNormalization") == 7 and "Dropout" not in ops and ops[-1] == "Gemm"
    assert [d.dim_param or d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim] == ["batch", 1, 8, 8]
    assert [d.dim_param or d.dim_value for d in proto.graph.output[0].type.tensor_type.shape.dim] == ["batch", 10]
    assert proto.opset_import[0].version == 17
    assert all(init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64) for init in proto.graph.initializer)
    fixed = export(model, (3, 1, 8, 8), dynamic_batch=False)
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 3


@needs_onnx
def test_linear_layout_follows_the_stored_weight():
    """Whichever way Linear stores its weight ((in, out) or PyTorch's (out, in)), Gemm gets
    transB to match, a square weight's layout found by running the layer: both a Linear and a
    square twin that stores the other layout export right."""
    from xpnn.onnx import converters
    from xpnn.onnx.export import _CONVERTERS

    layer = _randomise(nn.Linear(4, 4))
    assert _check(layer, (4,)) < 1e-5
    w = np.asarray(layer.weight.data).copy()
    stored_out_in = converters._linear_layout(layer)

    class Other(nn.Linear):  # the other layout: multiplies by the transpose of what Linear multiplies by
        def forward(self, x):
            return x @ (self.weight.data if stored_out_in else self.weight.data.T) + self.bias.data

    other = Other(4, 4)
    other.weight.data[...] = w.T
    other.bias.data[...] = layer.bias.data
    register_converter(Other)(converters.linear)
    try:
        assert converters._linear_layout(other) is (not stored_out_in)
        assert _check(other, (4,)) < 1e-5
        nodes = export(other, (2, 4)).graph.node
        assert [n.op_type for n in nodes] == ["Gemm"] and [a.i for a in nodes[0].attribute if a.name == "transB"] == [int(not stored_out_in)]
    finally:
        _CONVERTERS.pop(Other)


# ---- refusals ---------------------------------------------------------------------------------------

class _Doubler(nn.Module):
    def forward(self, x):
        return x * 2

    def backward(self, grad):
        return grad * 2


@needs_onnx
def test_refusals_name_the_layer_and_its_path():
    with pytest.raises(UnsupportedLayerError, match=r"1 \(Embedding\).*integer indices"):
        export(nn.Sequential(nn.Identity(), nn.Embedding(10, 3)), (2, 4))
    model = nn.Sequential(nn.Linear(4, 4), nn.Residual(nn.Sequential(nn.ReLU(), _Doubler())))
    with pytest.raises(UnsupportedLayerError, match=r"1\.body\.1 \(_Doubler\) has no ONNX form.*register_converter"):
        export(model, (2, 4))
    with pytest.raises(UnsupportedLayerError, match=r"the model \(_Doubler\)"):
        export(_Doubler(), (2, 4))
    with pytest.raises(UnsupportedLayerError, match=r"0 \(BatchNorm1d\).*track_running_stats"):
        export(nn.Sequential(nn.BatchNorm1d(4, track_running_stats=False)), (2, 4))
    with pytest.raises(UnsupportedLayerError, match=r"ModuleList.*no forward"):
        export(nn.ModuleList([nn.ReLU()]), (2, 4))

    class Custom(nn.Sequential):  # a Sequential whose forward is its own is not walked as one
        def forward(self, x):
            return super().forward(x) * 3

    with pytest.raises(UnsupportedLayerError, match=r"the model \(Custom\)"):
        export(Custom(nn.ReLU()), (2, 4))
    with pytest.raises(xpnn.errors.ConfigError, match="opset"):
        export(nn.ReLU(), (2, 4), opset=13)


@needs_onnx
def test_a_registered_converter_exports_a_users_layer():
    @register_converter(_Doubler)
    def double(ctx, layer, x, value):
        return ctx.node("Mul", [x, ctx.constant(2.0, "two")])

    try:
        assert _check(nn.Sequential(nn.Linear(3, 4), _Doubler()), (3,)) < 1e-5
    finally:
        from xpnn.onnx.export import _CONVERTERS

        _CONVERTERS.pop(_Doubler)


def test_missing_onnx_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(BackendUnavailableError, match=r"pip install 'xpnn\[onnx\]'"):
        export(nn.ReLU(), (2, 3))


def test_import_xpnn_imports_no_onnx():
    import subprocess

    code = "import sys, xpnn, xpnn.onnx; xpnn.onnx.supported_layers(); print('onnx' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"


# ---- the CLI, and the Done-when: an xpnn-trained LeNet scores the same in onnxruntime -------

@needs_onnx
def test_cli_export_of_a_trained_lenet_scores_the_same(tmp_path, capsys):
    from xpnn.data import load_dataset
    from xpnn.train import load_checkpoint

    run = tmp_path / "run"
    assert main(["train", "--dataset", "digits", "--model", "lenet", "--epochs", "3", "--no-progress", "--out", str(run)]) == 0
    onnx_path = tmp_path / "lenet.onnx"
    capsys.readouterr()
    assert main(["export", str(run / "model.npz"), "--onnx", str(onnx_path)]) == 0
    out, err = capsys.readouterr()
    assert err == "" and "input (batch, 1, 8, 8) -> output (batch, 10)" in out

    checkpoint = load_checkpoint(run / "model.npz")
    model = models.build_model("lenet", (1, 8, 8), 10)
    checkpoint.restore(model, rng=False)
    x, y = load_dataset("digits", train=False).arrays()
    want = _expected(model, x)
    got = _run(str(onnx_path), x)
    _assert_close(got, want)
    assert np.array_equal(got.argmax(1), want.argmax(1))
    accuracy = float((got.argmax(1) == y).mean())
    assert accuracy == float((want.argmax(1) == y).mean()) > 0.5

    before = onnx_path.read_bytes()
    assert main(["export", str(run / "model.npz"), "--onnx", str(onnx_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "exists; pass --overwrite" in err and onnx_path.read_bytes() == before
    assert main(["export", str(run / "model.npz"), "--onnx", str(onnx_path), "--overwrite", "--opset", "18"]) == 0
    assert main(["export", str(run / "model.npz"), "--onnx", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet.onnx", "run"]  # no temporaries left


def test_cli_export_refusals(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing.npz"), "--onnx", str(tmp_path / "m.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing.npz"), "--onnx", str(tmp_path / "m.onnx"), "--opset", "12"]) == 2
    assert "--opset" in capsys.readouterr().err

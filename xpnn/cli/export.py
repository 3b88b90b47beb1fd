"""``xpnn export``: a checkpoint's model (rebuilt as ``xpnn eval`` rebuilds it) written as an ONNX
graph in eval form, with a dynamic batch dimension and the checkpoint's image shape."""

import os

from ..errors import CheckpointError, ConfigError
from ..models import build_model
from .run_config import check_run_config, load_run_checkpoint, refuse_non_finite


def export_command(args):
    from .. import onnx as xonnx

    target = args.onnx
    if not target.strip():
        raise ConfigError(f"expected an output path for --onnx, got {target!r} (an unset shell variable?)")
    if os.path.isdir(target):
        raise ConfigError(f"--onnx {target} is a directory; give the path of the .onnx file to write")
    if os.path.lexists(target) and not args.overwrite:
        raise ConfigError(f"{target} exists; pass --overwrite to replace it")
    checkpoint = load_run_checkpoint(args.checkpoint, ())
    config = checkpoint.config
    if "image_shape" not in config:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} records no image_shape (it was not written by xpnn train), so the input's shape is unknown; "
            "export it from Python with xpnn.onnx.export(model, sample_input, path)"
        )
    if "model" not in config:  # a model built in Python, rebuilt from its saved architecture
        model = checkpoint.build_model()
    else:  # a checkpoint of 'xpnn train': the run config names the model
        check_run_config(checkpoint, ("model", "image_shape", "num_classes"))
        model = build_model(config["model"], config["image_shape"], config["num_classes"])
        checkpoint.restore(model, rng=False)
    refuse_non_finite(checkpoint, model)
    shape = (1, *(int(d) for d in config["image_shape"]))
    proto = xonnx.export(model, shape, target, opset=args.opset)
    shown = lambda value_info: "(" + ", ".join(d.dim_param or str(d.dim_value) for d in value_info.type.tensor_type.shape.dim) + ")"  # noqa: E731
    print(f"wrote {target}: {config.get('model', checkpoint.model_class)} as ONNX opset {args.opset}, "
          f"input {shown(proto.graph.input[0])} -> output {shown(proto.graph.output[0])}, {len(proto.graph.node)} nodes")
    return 0

"""ONNX export: ``xpnn.onnx.export(model, sample_input, path)`` writes a model in eval form as an
ONNX graph (opset 17 or newer, a dynamic batch dimension) that ONNX Runtime runs.

The module tree is walked, not traced: each layer class has one small converter
(``xpnn/onnx/converters.py``) that emits its ONNX nodes, with its weights as float32 initializers;
containers (Sequential and the models, Residual, Parallel) convert their members in order. A layer
without a converter is an ``UnsupportedLayerError`` naming it and its path in the model; a user's
layer can get one with :func:`register_converter`.

Importing this package needs nothing but xpnn; ``export`` imports ``onnx`` (the optional extra
``pip install 'xpnn[onnx]'``) when called.
"""

from .export import (
    DEFAULT_OPSET, MIN_OPSET, ExportContext, UnsupportedLayerError, export, register_converter, supported_layers,
)

__all__ = [
    "DEFAULT_OPSET", "MIN_OPSET", "ExportContext", "UnsupportedLayerError", "export", "register_converter", "supported_layers",
]

"""cnnnative.onnx: ONNX models in and out of cnnnative.

    import_model(path | bytes | onnx.ModelProto) -> OnnxModule   (a cnnnative Module: compile() it)
    export_model(model, path, input_shape)       -> onnx.ModelProto (opset 17, also written to path)
    convert(src, dst)                            .onnx <-> .cnn (the `python -m cnnnative convert` CLI)
    cnnnative.onnx.backend                       onnx.backend.base.Backend implementation (prepare/run)

Needs the `onnx` package (pip install 'cnnnative[onnx]'); it is imported on first use, never by
`import cnnnative`. Import raises only these errors, each listing every offending node at once (name, op type,
the bad value): InvalidModelError (a cnnnative.Error, hence a ValueError) for a model that breaks the ONNX
specification, UnsupportedError (a ValueError) for a valid one the engine cannot run, ModelFileError (an OSError
and a cnnnative.Error) for a path that cannot be read. What is supported, and how: docs/onnx.md."""
from __future__ import annotations

import importlib

from ._common import FOLDABLE_OPS, SUPPORTED_OPS, InvalidModelError, ModelFileError, UnsupportedError

__all__ = ["import_model", "export_model", "convert", "UnsupportedError", "InvalidModelError", "ModelFileError",
           "SUPPORTED_OPS", "FOLDABLE_OPS", "OnnxModule", "backend"]


def import_model(src, *, bind=None, validate: bool = True):
    """ONNX model -> cnnnative Module (see cnnnative.onnx._importer.OnnxModule).

    src: a path, bytes, a binary file object or an onnx.ModelProto. bind: {graph input name: array} to
    treat as constants (e.g. weights fed as inputs). validate: when the model declares its input shapes,
    check every node at import (a symbolic batch counts as 1) so that problems surface here rather than at
    compile(). Raises InvalidModelError listing every node that breaks the ONNX specification, else
    UnsupportedError listing every unsupported node; ModelFileError when a path cannot be read."""
    from ._importer import import_model as _imp
    return _imp(src, bind=bind, validate=validate)


def export_model(model, path=None, input_shape=None, **kw):
    """cnnnative Module -> ONNX (opset 17), written to `path` (None: not written), returned as a ModelProto.
    input_shape: (N, C, ...) to trace with (an imported or loaded model knows its own). Keywords:
    dynamic_batch=True, input_name='input', output_name='output', check=True. See
    cnnnative.onnx._exporter.export_model."""
    from ._exporter import export_model as _exp
    return _exp(model, path, input_shape, **kw)


def convert(src, dst, input_shape=None):
    """Converts between .onnx and .cnn files (the `python -m cnnnative convert` command); see
    cnnnative.onnx._exporter.convert."""
    from ._exporter import convert as _conv
    return _conv(src, dst, input_shape=input_shape)


def __getattr__(name):
    if name == "backend":
        return importlib.import_module(".backend", __name__)
    if name == "OnnxModule":
        return importlib.import_module("._importer", __name__).OnnxModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

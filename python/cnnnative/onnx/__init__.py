"""cnnnative.onnx: ONNX models in and out of cnnnative.

    import_model(path | bytes | onnx.ModelProto) -> OnnxModule   (a cnnnative Module: compile() it)
    export_model(model, path, input_shape)       -> onnx.ModelProto (opset 17, also written to path)
    convert(src, dst)                            .onnx <-> .cnn (the `python -m cnnnative convert` CLI)
    cnnnative.onnx.backend                       onnx.backend.base.Backend implementation (prepare/run)

Needs the `onnx` package (pip install onnx, or '.[onnx]' in the repository); it is imported on first use, never by
`import cnnnative`. Import raises only these errors, each listing every offending node at once (name, op type,
the bad value): InvalidModelError (a cnnnative.Error, hence a ValueError) for a model that breaks the ONNX
specification, UnsupportedError (a ValueError) for a valid one the engine cannot run, ModelFileError (an OSError
and a cnnnative.Error) for a path that cannot be read. What is supported, and how: docs/onnx.md."""
from __future__ import annotations

import importlib

from ._common import FOLDABLE_OPS, SUPPORTED_OPS, InvalidModelError, ModelFileError, UnsupportedError

__all__ = ["import_model", "export_model", "convert", "UnsupportedError", "InvalidModelError", "ModelFileError",
           "SUPPORTED_OPS", "FOLDABLE_OPS", "OnnxModule", "backend"]


def import_model(src, *, bind=None, validate: bool = True, input_shape=None):
    """ONNX model -> cnnnative Module (see cnnnative.onnx._importer.OnnxModule).

    src: a path, bytes, a binary file object or an onnx.ModelProto. bind: {graph input name: array} to
    treat as constants (e.g. weights fed as inputs). validate: when the model declares its input shapes,
    check every node at import (a symbolic batch counts as 1) so that problems surface here rather than at
    compile(). input_shape: fixes symbolic input dimensions, e.g. (1, 3, 224, 224) for a one-input model or
    {input name: shape} (None leaves a dimension symbolic); shape subgraphs (Shape, Gather, Concat, Range,
    Expand, ...) then fold at import, every node is checked at import, and the model takes that shape only.
    Raises InvalidModelError listing every node that breaks the ONNX specification, else UnsupportedError
    listing every unsupported node (grouped by op type); ModelFileError when a path cannot be read;
    ValueError for an input_shape that does not fit the model."""
    from ._importer import import_model as _imp
    return _imp(src, bind=bind, validate=validate, input_shape=input_shape)


def export_model(model, path=None, input_shape=None, **kw):
    """cnnnative Module -> ONNX (opset 17), written to `path` (None: not written), returned as a ModelProto.
    input_shape: (N, C, ...) to trace with (an imported or loaded model knows its own). Keywords:
    dynamic_batch=True, input_name='input', output_name='output', check=True. See
    cnnnative.onnx._exporter.export_model."""
    from ._exporter import export_model as _exp
    return _exp(model, path, input_shape, **kw)


def convert(src, dst, input_shape=None):
    """Converts between .onnx and .cnn files (the `python -m cnnnative convert` command); see
    cnnnative.onnx._exporter.convert. input_shape: the shape to save/trace with; for an .onnx source it also
    fixes the model's symbolic input dimensions at import (import_model(..., input_shape=...)), so that shape
    subgraphs fold."""
    import os

    from ._exporter import convert as _conv
    if input_shape is not None and os.path.splitext(os.fspath(src))[1].lower() == ".onnx":
        return _convert_onnx(src, dst, tuple(int(s) for s in input_shape))
    return _conv(src, dst, input_shape=input_shape)


def _convert_onnx(src, dst, shape):
    """.onnx -> .cnn / .onnx with the import's input dimensions fixed to `shape` (as _exporter.convert does
    otherwise)."""
    import os

    import cnnnative as cn

    from ._exporter import convert as _conv
    from ._importer import import_model as _imp
    d_ext = os.path.splitext(os.fspath(dst))[1].lower()
    save = getattr(cn, "save", None)
    if d_ext not in (".cnn", ".onnx") or (d_ext == ".cnn" and save is None):
        return _conv(src, dst, input_shape=shape)  # its error
    model = _imp(src, input_shape=shape)
    if d_ext == ".onnx":
        export_model(model, dst, shape)
    else:
        save(model, dst, shape)
    return dst


def __getattr__(name):
    if name == "backend":
        return importlib.import_module(".backend", __name__)
    if name == "OnnxModule":
        return importlib.import_module("._importer", __name__).OnnxModule
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

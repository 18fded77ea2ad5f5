"""Shared by the ONNX importer, exporter and backend: the error type, the lazy `onnx` import, name
sanitizing. Importing this module never imports onnx."""
from __future__ import annotations

import re

# ONNX operators the importer maps onto engine ops (docs/onnx.md says how, and what is left out).
SUPPORTED_OPS = (
    "Add", "AveragePool", "BatchNormalization", "Concat", "Constant", "Conv", "ConvTranspose", "Div",
    "Dropout", "Flatten", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "Identity", "LeakyRelu", "LRN",
    "MatMul", "MaxPool", "Mul", "Pad", "Relu", "Reshape", "Resize", "Sigmoid", "Slice", "Softmax",
    "Squeeze", "Sub", "Sum", "Tanh", "Unsqueeze", "Upsample",
)

# Operators evaluated with numpy when every input is a constant (shape arithmetic, weight preprocessing).
# Shape also folds on a traced tensor: its shape is known while a model is traced.
FOLDABLE_OPS = (
    "Add", "Cast", "Ceil", "Concat", "ConstantOfShape", "Div", "Equal", "Expand", "Flatten", "Floor",
    "Gather", "Identity", "Max", "Min", "Mul", "Neg", "Range", "Reciprocal", "Reshape", "Shape", "Slice",
    "Sqrt", "Squeeze", "Sub", "Transpose", "Unsqueeze", "Where",
)


class UnsupportedError(ValueError):
    """An ONNX model uses operators or attributes the engine cannot run. `problems` holds one
    (node name, op type, reason) per offending node; the message lists them all."""

    def __init__(self, problems, context: str = "ONNX model"):
        self.problems = [tuple(p) for p in problems]
        lines = [f"  - node {name!r} ({op}): {why}" for name, op, why in self.problems]
        n = len(self.problems)
        super().__init__(f"{context}: {n} unsupported node{'s' if n != 1 else ''}:\n" + "\n".join(lines))


def require_onnx():
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - exercised only without onnx
        raise ImportError("cnnnative.onnx needs the 'onnx' package: pip install 'cnnnative[onnx]' "
                          "(or pip install onnx)") from e
    return onnx


_BAD = re.compile(r"[^A-Za-z0-9_.]")


def sanitize(name: str, taken: set) -> str:
    """A state_dict key for an ONNX name: characters other than [A-Za-z0-9_.] become '_', no empty or
    dot-edged parts, unique within `taken` (which it updates)."""
    s = _BAD.sub("_", name)
    s = ".".join(p for p in s.split(".") if p) or "param"
    base, k = s, 1
    while s in taken:
        s = f"{base}_{k}"
        k += 1
    taken.add(s)
    return s

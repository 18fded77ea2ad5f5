"""Shared by the ONNX importer, exporter and backend: the error types, the importer's limits, the lazy `onnx`
import, name sanitizing. Importing this module never imports onnx."""
from __future__ import annotations

import re

from .. import _core

# ONNX operators the importer maps onto engine ops (docs/onnx.md says how, and what is left out).
SUPPORTED_OPS = (
    "Add", "AveragePool", "BatchNormalization", "Clip", "Concat", "Constant", "Conv", "ConvTranspose", "Div",
    "Dropout", "Elu", "Erf", "Flatten", "Gelu", "Gemm", "GlobalAveragePool", "GlobalMaxPool", "GroupNormalization",
    "HardSigmoid", "HardSwish", "Identity", "InstanceNormalization", "LRN", "LayerNormalization", "LeakyRelu",
    "LogSoftmax", "MatMul", "MaxPool", "Mish", "Mul", "PRelu", "Pad", "ReduceMax", "ReduceMean", "ReduceSum",
    "Relu", "Reshape", "Resize", "Sigmoid", "Slice", "Softmax", "Softplus", "Squeeze", "Sub", "Sum", "Tanh",
    "Unsqueeze", "Upsample",
)

# Operators evaluated with numpy when every input is a constant (shape arithmetic, weight preprocessing).
# Shape also folds on a traced tensor: its shape is known while a model is traced.
FOLDABLE_OPS = (
    "Abs", "Add", "And", "Cast", "Ceil", "Concat", "ConstantOfShape", "Div", "Equal", "Expand", "Flatten",
    "Floor", "Gather", "Greater", "GreaterOrEqual", "Identity", "Less", "LessOrEqual", "Max", "Min", "Mod",
    "Mul", "Neg", "Not", "Or", "Range", "Reciprocal", "ReduceMax", "ReduceMean", "ReduceMin", "ReduceProd",
    "ReduceSum", "Reshape", "Shape", "Sign", "Size", "Slice", "Sqrt", "Squeeze", "Sub", "Transpose",
    "Unsqueeze", "Where", "Xor", "QuantizeLinear", "DequantizeLinear",
)

# Limits of the importer. Where they overlap with the .cnn format's (cpp/src/core/serialize.hpp) they are the
# same, so that an imported model can be saved; the others keep a hostile file from exhausting memory or time.
MAX_DIM = 2 ** 31 - 1          # one dimension of a tensor, and any size/stride/pad attribute sent to the engine
MAX_ELEMENTS = 2 ** 40         # elements of one tensor the engine would compute
MAX_NAME = 4096                # characters in a name (node, value, initializer, attribute string)
MAX_NODES = 1 << 20            # nodes of the graph, model-local functions inlined
MAX_NODE_IO = 4096             # inputs or outputs of one node
MAX_LIST = 4096                # values of one ints/floats/strings attribute (Constant's value_* excepted)
FOLD_MAX_ELEMENTS = 64 << 20   # elements of one constant computed at import (Range, Expand, ConstantOfShape, ...)
FOLD_MAX_BYTES = 256 << 20     # bytes of one such constant
FOLD_MAX_TOTAL_BYTES = 1 << 30  # bytes of all the constants computed while importing (or tracing) one model
MAX_FILE_BYTES = 2 ** 31       # a protobuf message is at most 2 GiB


def _short(name, limit=60):
    name = str(name)
    return name if len(name) <= limit else name[:limit] + "..."


def _lines(problems):
    out = []
    for name, op, why in problems:
        if op in _GRAPH_PARTS:
            out.append(f"  - {op} {name!r}: {why}" if name else f"  - {op}: {why}")
        else:
            out.append(f"  - node {name!r} ({op}): {why}")
    return "\n".join(out)


def _summary(problems, first=3):
    """One line per op type (or model part), most frequent first: "Mul: 65 nodes (first: a, b, c, ...)"."""
    groups = {}
    for name, op, _ in problems:
        groups.setdefault(op, []).append(name)
    out = []
    for op, names in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        unique = [_short(n) for n in dict.fromkeys(n for n in names if n)]
        what = "node" if op not in _GRAPH_PARTS else "problem"
        label = f"{len(names)} {what}{'s' if len(names) != 1 else ''}"
        if len(unique) > first:
            label += f" (first: {', '.join(unique[:first])}, ...)"
        elif unique:
            label += f" ({', '.join(unique)})"
        out.append(f"  {op}: {label}")
    return "\n".join(out)


def _message(head, problems):
    """The error text: the head, then (for several problems) one line per op type with counts, then one
    line per problem."""
    if len(problems) < 2:
        return head + ":\n" + _lines(problems)
    return f"{head}, by op type:\n{_summary(problems)}\ndetails:\n{_lines(problems)}"


# problem kinds that are parts of the model rather than nodes: "graph output 'y': ..." instead of "node 'y' (...)"
_GRAPH_PARTS = {"model", "graph", "graph input", "graph output", "initializer", "input", "opset",
                "sparse_initializer", "function", "external data"}


class UnsupportedError(ValueError):
    """An ONNX model uses operators or attributes the engine cannot run. `problems` holds one
    (node name, op type, reason) per offending node; the message lists them all."""

    def __init__(self, problems, context: str = "ONNX model"):
        self.problems = [tuple(p) for p in problems]
        n = len(self.problems)
        super().__init__(_message(f"{context}: {n} unsupported node{'s' if n != 1 else ''}", self.problems))


class InvalidModelError(_core.Error):
    """An ONNX model breaks the ONNX specification: a malformed file, a broken graph (undefined or duplicate
    names, a cycle), an attribute outside its range, inconsistent shapes. A cnnnative.Error, hence a
    ValueError. `problems` holds one (node or value name, op type or model part, reason) per problem found;
    the message lists them all."""

    def __init__(self, problems, context: str = "ONNX model"):
        self.problems = [tuple(p) for p in problems]
        n = len(self.problems)
        super().__init__(_message(f"{context} is invalid: {n} problem{'s' if n != 1 else ''}", self.problems))


class ModelFileError(_core.Error, OSError):
    """A model file that cannot be read: missing, a folder, not a regular file, unreadable. Both an OSError
    (`errno` set when the system gave one) and a cnnnative.Error, as cnnnative.load's errors are."""

    def __init__(self, message: str, errno=None, path=None):
        super().__init__(message)
        self.errno, self.path = errno, path

    def __str__(self):
        return self.args[0] if self.args else ""


def require_onnx():
    try:
        import onnx
    except ImportError as e:  # pragma: no cover - exercised only without onnx
        raise ImportError("cnnnative.onnx needs the 'onnx' package: pip install onnx "
                          "(or pip install '.[onnx]' in cnnnative's repository)") from e
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

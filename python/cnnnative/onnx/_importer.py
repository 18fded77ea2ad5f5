"""ONNX -> cnnnative. `import_model` reads a ModelProto once and returns an OnnxModule: a cnnnative Module
whose parameters and buffers are the model's initializers (names sanitized) and whose forward() replays
the ONNX graph through engine ops while a model is traced, so `compile(input_shape)` works for any
input shape the graph allows.

At import (numpy, once):
  - Constant nodes and nodes whose inputs are all constants are evaluated (shape arithmetic, weight
    preprocessing such as ConstantOfShape or Transpose of a weight);
  - Gemm and MatMul with a constant right operand become `Linear` (weight stored [OUT, IN], alpha and
    beta folded); Add/Sub/Mul/Div with one constant operand become `Affine` (y = x * scale + shift with
    scale/shift varying along at most one axis); Sub of two tensors becomes Add(a, Affine(b, -1));
  - an Affine right after a Conv, ConvTranspose, Linear or BatchNormalization whose output nothing else
    reads is folded into that node's weights (exact per-channel algebra); chains of Affines merge; the
    rest run as an eval-mode batch_norm with mean 0, var 1, eps 0, i.e. exactly x * scale + shift;
  - a constant-mode zero Pad read only by Convs is folded into their pads;
  - when the model declares its input shapes, a dry trace checks every node, so one UnsupportedError
    lists every unsupported node, op type and attribute at once.
While tracing (per input shape): auto_pad and asymmetric pads are resolved against the real sizes (pads
that the engine's symmetric padding cannot express exactly become explicit pads: concat with a `fill`
constant), Shape-derived arithmetic folds to constants, 1-D convs/pools run as 2-D with H = 1.
It never imports onnx at `import cnnnative` time, and never writes to the ModelProto it is given."""
from __future__ import annotations

import math
import os
from collections import Counter

import numpy as np

from .. import _core
from .. import nn
from ..graph import Tensor, current
from ._common import FOLDABLE_OPS, SUPPORTED_OPS, UnsupportedError, require_onnx, sanitize

_NEG_BIG = -3.4028234663852886e38  # max-pool padding value (-FLT_MAX)
_MIN_OPSET = 6


class _Unsupported(Exception):
    """Raised by a handler: the node cannot be expressed with engine ops (the reason is the message)."""


class _Node:
    __slots__ = ("op", "name", "inputs", "outputs", "attrs")

    def __init__(self, op, name, inputs, outputs, attrs):
        self.op, self.name, self.inputs, self.outputs, self.attrs = op, name, list(inputs), list(outputs), attrs

    def __repr__(self):
        return f"_Node({self.op}, {self.name!r}, {self.inputs} -> {self.outputs})"


def _engine_ops() -> set:
    return set(_core.op_names())


# ---------------------------------------------------------------------------------------------------
# parsing


def _attr_value(onnx, a):
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, onnx.TensorProto):
        return onnx.numpy_helper.to_array(v)
    if isinstance(v, list) and v and isinstance(v[0], bytes):
        return [s.decode("utf-8", "replace") for s in v]
    return v


def _constant_value(attrs):
    if "value" in attrs:
        return np.asarray(attrs["value"])
    if "value_float" in attrs:
        return np.array(attrs["value_float"], np.float32)
    if "value_floats" in attrs:
        return np.array(attrs["value_floats"], np.float32)
    if "value_int" in attrs:
        return np.array(attrs["value_int"], np.int64)
    if "value_ints" in attrs:
        return np.array(attrs["value_ints"], np.int64)
    raise _Unsupported("only tensor, float(s) and int(s) constants are supported "
                       f"(got attribute {', '.join(attrs) or 'none'})")


def load_model_proto(src):
    """A ModelProto from a path, bytes, a file object or a ModelProto (returned as is)."""
    onnx = require_onnx()
    if isinstance(src, onnx.ModelProto):
        return src
    try:
        if isinstance(src, (bytes, bytearray, memoryview)):
            return onnx.load_from_string(bytes(src))
        if isinstance(src, (str, os.PathLike)):
            return onnx.load(os.fspath(src))
        if hasattr(src, "read"):
            return onnx.load(src)
    except (OSError, FileNotFoundError):
        raise
    except Exception as e:  # protobuf DecodeError and friends: a malformed file
        raise ValueError(f"not a readable ONNX model: {type(e).__name__}: {e}") from None
    raise TypeError(f"import_model: expected a path, bytes or onnx.ModelProto, got {type(src).__name__}")


# ---------------------------------------------------------------------------------------------------
# constant folding (numpy), used at import for constant subgraphs and while tracing for Shape arithmetic


def _axes_arg(node, ins, k):
    """Axes of Squeeze/Unsqueeze/ReduceX: input k (opset 13+) or attribute 'axes'."""
    if len(ins) > k and ins[k] is not None:
        return [int(a) for a in np.asarray(ins[k]).reshape(-1)]
    a = node.attrs.get("axes")
    return None if a is None else [int(v) for v in a]


def _unsqueezed_shape(shape, axes):
    r = len(shape) + len(axes)
    axes = sorted(a + r if a < 0 else a for a in axes)
    out = list(shape)
    for a in axes:
        out.insert(a, 1)
    return out


def _squeezed_shape(shape, axes):
    r = len(shape)
    if axes is None:
        return [d for d in shape if d != 1]
    axes = {a + r if a < 0 else a for a in axes}
    for a in axes:
        if shape[a] != 1:
            raise _Unsupported(f"Squeeze of axis {a} whose size is {shape[a]}, not 1")
    return [d for i, d in enumerate(shape) if i not in axes]


def _reshape_target(in_shape, shape, allowzero):
    t = [int(v) for v in np.asarray(shape).reshape(-1)]
    if not allowzero:
        t = [in_shape[i] if v == 0 else v for i, v in enumerate(t)]
    if -1 in t:
        known = int(np.prod([v for v in t if v != -1])) if len(t) > 1 else 1
        total = int(np.prod(in_shape))
        t[t.index(-1)] = total // known if known else 0
    return t


def _slice_bounds(dim, start, end, step):
    """ONNX Slice clamping for one axis (step 1 or -1 paths as python slicing)."""
    return slice(*slice(int(start) if abs(start) < 2 ** 62 else (dim if start > 0 else -dim - 1),
                        int(end) if abs(end) < 2 ** 62 else (dim if end > 0 else -dim - 1),
                        int(step)).indices(dim))


def _slice_args(node, ins, rank):
    if len(ins) > 1:  # opset 10+
        starts = np.asarray(ins[1]).reshape(-1).tolist()
        ends = np.asarray(ins[2]).reshape(-1).tolist()
        axes = np.asarray(ins[3]).reshape(-1).tolist() if len(ins) > 3 and ins[3] is not None else None
        steps = np.asarray(ins[4]).reshape(-1).tolist() if len(ins) > 4 and ins[4] is not None else None
    else:
        starts, ends = list(node.attrs["starts"]), list(node.attrs["ends"])
        axes, steps = node.attrs.get("axes"), None
    axes = list(range(len(starts))) if axes is None else [a + rank if a < 0 else a for a in axes]
    steps = [1] * len(starts) if steps is None else steps
    return starts, ends, axes, steps


def _np_dtype(onnx, to):
    return onnx.helper.tensor_dtype_to_np_dtype(int(to))


def _fold(node, ins):
    """numpy value(s) of a node whose inputs are all constants (a traced tensor only for Shape)."""
    onnx = require_onnx()
    op, a = node.op, node.attrs
    if op == "Identity":
        return [ins[0]]
    if op == "Shape":
        s = np.array(ins[0].shape, np.int64)
        r = len(s)
        start, end = a.get("start", 0), a.get("end", r)
        start, end = (start + r if start < 0 else start), (end + r if end < 0 else end)
        return [s[max(0, start):min(r, end)]]
    if op == "Cast":
        return [np.asarray(ins[0]).astype(_np_dtype(onnx, a["to"]))]
    if op == "ConstantOfShape":
        v = a.get("value")
        v = np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)
        return [np.full([int(d) for d in np.asarray(ins[0]).reshape(-1)], v[0], v.dtype)]
    if op == "Gather":
        return [np.take(ins[0], np.asarray(ins[1]).astype(np.int64), axis=a.get("axis", 0))]
    if op == "Unsqueeze":
        x = np.asarray(ins[0])
        return [x.reshape(_unsqueezed_shape(x.shape, _axes_arg(node, ins, 1)))]
    if op == "Squeeze":
        x = np.asarray(ins[0])
        return [x.reshape(_squeezed_shape(x.shape, _axes_arg(node, ins, 1)))]
    if op == "Concat":
        return [np.concatenate([np.asarray(v) for v in ins], axis=a["axis"])]
    if op == "Reshape":
        x = np.asarray(ins[0])
        return [x.reshape(_reshape_target(x.shape, ins[1], a.get("allowzero", 0)))]
    if op == "Flatten":
        x = np.asarray(ins[0])
        ax = a.get("axis", 1)
        ax = ax + x.ndim if ax < 0 else ax
        return [x.reshape(int(np.prod(x.shape[:ax])), -1)]
    if op == "Transpose":
        return [np.transpose(ins[0], a.get("perm"))]
    if op == "Slice":
        x = np.asarray(ins[0])
        starts, ends, axes, steps = _slice_args(node, ins, x.ndim)
        sl = [slice(None)] * x.ndim
        for s, e, ax, st in zip(starts, ends, axes, steps):
            sl[ax] = _slice_bounds(x.shape[ax], s, e, st)
        return [x[tuple(sl)]]
    if op == "Range":
        start, limit, delta = (np.asarray(v).item() for v in ins)
        return [np.arange(start, limit, delta).astype(np.asarray(ins[0]).dtype)]
    if op == "Expand":
        x = np.asarray(ins[0])
        shape = [int(d) for d in np.asarray(ins[1]).reshape(-1)]
        return [x * np.ones(shape, x.dtype)]
    if op == "Where":
        return [np.where(ins[0], ins[1], ins[2])]
    if op in ("Add", "Sub", "Mul", "Div", "Equal", "Max", "Min"):
        x, y = np.asarray(ins[0]), np.asarray(ins[1])
        if op == "Div" and x.dtype.kind in "iu" and y.dtype.kind in "iu":
            return [np.trunc(x / y).astype(np.result_type(x, y))]
        if op in ("Max", "Min"):
            f = np.maximum if op == "Max" else np.minimum
            out = np.asarray(ins[0])
            for v in ins[1:]:
                out = f(out, v)
            return [out]
        f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Equal": np.equal}[op]
        return [np.asarray(f(x, y)).astype(np.result_type(x, y) if op != "Equal" else bool)]
    if op in ("Neg", "Sqrt", "Reciprocal", "Floor", "Ceil"):
        f = {"Neg": np.negative, "Sqrt": np.sqrt, "Reciprocal": np.reciprocal, "Floor": np.floor,
             "Ceil": np.ceil}[op]
        x = np.asarray(ins[0])
        return [np.asarray(f(x)).astype(x.dtype)]
    raise _Unsupported(f"no constant folding for {op}")


# ---------------------------------------------------------------------------------------------------
# the program: a rewritten graph plus the table of constants held by the module


def _varying_axes(shape):
    return [i for i, d in enumerate(shape) if d != 1]


def _affine_layout(scale, shift):
    """(d, axis_from_end, ndim, scale_vec, shift_vec) of y = x*scale + shift, or a reason string."""
    s = np.ones((), np.float64) if scale is None else np.asarray(scale, np.float64)
    t = np.zeros((), np.float64) if shift is None else np.asarray(shift, np.float64)
    try:
        full = np.broadcast_shapes(s.shape, t.shape)
    except ValueError:
        return "scale and shift constants do not broadcast together"
    ax = _varying_axes(full)
    if len(ax) > 1:
        return (f"the constant operand {list(full)} varies along more than one axis (the engine has no "
                "general broadcasting elementwise ops, only per-channel affines)")
    s, t = np.broadcast_to(s, full).reshape(-1), np.broadcast_to(t, full).reshape(-1)
    if not ax:
        return 1, None, len(full), s[:1].copy(), t[:1].copy()
    return int(full[ax[0]]), len(full) - ax[0], len(full), s.copy(), t.copy()


class _Program:
    """The importable graph. run(xs) replays it under the current GraphBuilder."""

    def __init__(self, model, bind=None):
        onnx = require_onnx()
        g = model.graph
        self.opset = 0
        for o in model.opset_import:
            if o.domain in ("", "ai.onnx"):
                self.opset = int(o.version)
        self.static_problems = []
        if self.opset and self.opset < _MIN_OPSET:
            self.static_problems.append(("<model>", "opset", f"opset {self.opset} is older than {_MIN_OPSET}"))
        if model.functions:
            from onnx import inliner
            model = inliner.inline_local_functions(model)
            g = model.graph
        self.consts = {}
        for t in g.initializer:
            self.consts[t.name] = onnx.numpy_helper.to_array(t)
        for t in g.sparse_initializer:
            self.static_problems.append((t.values.name, "sparse_initializer", "sparse initializers are not supported"))
        for k, v in (bind or {}).items():
            self.consts[k] = np.asarray(v)
        self.inputs = []  # (name, dims with None for symbolic ones, elem type)
        for vi in g.input:
            if vi.name in self.consts:
                continue
            tt = vi.type.tensor_type
            dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None
                    for d in tt.shape.dim] if tt.HasField("shape") else None
            self.inputs.append((vi.name, dims, tt.elem_type))
            if tt.elem_type not in (onnx.TensorProto.FLOAT, 0) and vi.HasField("type"):
                self.static_problems.append((vi.name, "input", "graph input of type "
                                             f"{onnx.TensorProto.DataType.Name(tt.elem_type)} (only float32 inputs)"))
        self.input_names = [n for n, _, _ in self.inputs]
        self.output_names = [o.name for o in g.output]
        nodes, seen = [], set()
        for i, n in enumerate(g.node):
            name = n.name or f"{n.op_type}_{i}"
            while name in seen:
                name = f"{name}_{i}"
            seen.add(name)
            attrs = {a.name: _attr_value(onnx, a) for a in n.attribute}
            if n.domain not in ("", "ai.onnx"):  # reported when the graph is replayed or checked
                nodes.append(_Node(f"{n.domain}.{n.op_type}", name, n.input, n.output, attrs))
                continue
            if n.op_type == "Constant":
                try:
                    self.consts[n.output[0]] = _constant_value(attrs)
                except _Unsupported as e:
                    self.static_problems.append((name, "Constant", str(e)))
                continue
            nodes.append(_Node(n.op_type, name, n.input, n.output, attrs))
        self.nodes = nodes
        self._fold_constants()
        self._canonicalize()
        self._fold_pads()
        self._fold_affines()
        self._merge_affines()
        self._assign_params()
        self.declared_batch = None
        if self.inputs and self.inputs[0][1]:
            self.declared_batch = self.inputs[0][1][0]

    # ---- graph helpers ----
    def _uses(self):
        c = Counter(i for n in self.nodes for i in n.inputs if i)
        c.update(self.output_names)
        return c

    def _producers(self):
        return {o: n for n in self.nodes for o in n.outputs if o}

    def _derive(self, orig, value, suffix, uses):
        """Name for a rewritten constant: the original name when nothing else reads it."""
        if orig and uses[orig] <= 1 and orig not in self.output_names:
            self.consts[orig] = value
            return orig
        base = (orig or "const") + "_" + suffix
        name, k = base, 1
        while name in self.consts:
            name, k = f"{base}{k}", k + 1
        self.consts[name] = value
        return name

    def _const(self, name):
        return self.consts.get(name) if name else None

    # ---- passes ----
    def _fold_constants(self):
        keep = []
        for n in self.nodes:
            ins = [i for i in n.inputs if i]
            if n.op in _FOLDABLE and ins and all(i in self.consts for i in ins):
                try:
                    outs = _fold(n, [self.consts[i] if i else None for i in n.inputs])
                except Exception:  # leave it to the handler, which reports it
                    keep.append(n)
                    continue
                for o, v in zip(n.outputs, outs):
                    if o:
                        self.consts[o] = np.asarray(v)
            else:
                keep.append(n)
        self.nodes = keep

    def _legacy_broadcast(self, n, ranks):
        """Opset < 7 binary ops: with broadcast=1 and `axis`, B aligns at `axis` rather than at the end;
        reshape the constant operand so numpy broadcasting says the same. Returns a problem or None."""
        if self.opset >= 7 or n.op not in ("Add", "Sub", "Mul", "Div") or not n.attrs.get("broadcast", 0) \
                or "axis" not in n.attrs or n.inputs[1] not in self.consts:
            return None
        r = ranks.get(n.inputs[0])
        c = np.asarray(self.consts[n.inputs[1]])
        if r is None:
            return "legacy broadcast with axis=... on a tensor of unknown rank"
        axis = int(n.attrs["axis"])
        axis = axis + r if axis < 0 else axis
        name = n.inputs[1] + "__bcast"
        self.consts[name] = c.reshape(c.shape + (1,) * (r - axis - c.ndim))
        n.inputs[1] = name
        return None

    def _canonicalize(self):
        out = []
        uses = self._uses()
        ranks = self._ranks() if self.opset < 7 else {}
        for n in self.nodes:
            ins = n.inputs
            why = self._legacy_broadcast(n, ranks)
            if why:
                self.static_problems.append((n.name, n.op, why))
            if self.opset < 7 and int(n.attrs.get("is_test", 1)) == 0 and n.op in ("BatchNormalization", "Dropout"):
                self.static_problems.append((n.name, n.op, "is_test=0 (training behaviour)"))
            if n.op == "Gemm" and len(ins) >= 2 and ins[1] in self.consts and not n.attrs.get("transA", 0):
                lin = self._gemm_as_linear(n, uses)
                if lin is not None:
                    out.append(lin)
                    continue
            if n.op == "MatMul" and len(ins) == 2 and ins[1] in self.consts and ins[0] not in self.consts:
                B = np.asarray(self.consts[ins[1]])
                if B.ndim in (1, 2) and B.dtype.kind == "f":
                    W = B.reshape(1, -1) if B.ndim == 1 else B.T
                    wname = self._derive(ins[1], np.ascontiguousarray(W, np.float32), "t", uses)
                    out.append(_Node("Linear", n.name, [ins[0], wname, ""], n.outputs, {"vector": int(B.ndim == 1)}))
                    continue
            if n.op in ("Add", "Sub", "Mul", "Div") and len(ins) == 2:
                ca, cb = ins[0] in self.consts, ins[1] in self.consts
                if ca != cb:
                    k = 1 if cb else 0
                    c = np.asarray(self.consts[ins[k]])
                    if c.dtype.kind == "f":
                        c = c.astype(np.float64)
                        x = ins[1 - k]
                        scale = shift = None
                        if n.op == "Add":
                            shift = c
                        elif n.op == "Sub":
                            scale, shift = (None, -c) if k == 1 else (-np.ones_like(c), c)
                        elif n.op == "Mul":
                            scale = c
                        elif k == 1:  # x / c
                            scale = 1.0 / c
                        if scale is not None or shift is not None:
                            out.append(_Node("Affine", n.name, [x], n.outputs, {"scale": scale, "shift": shift,
                                                                                  "from": n.op}))
                            continue
                elif not ca and n.op == "Sub":  # a - b = a + (-1) * b
                    neg = n.outputs[0] + "__neg"
                    out.append(_Node("Affine", n.name + ".neg", [ins[1]], [neg],
                                     {"scale": np.array(-1.0), "shift": None, "from": "Sub"}))
                    out.append(_Node("Add", n.name, [ins[0], neg], n.outputs, {}))
                    continue
            out.append(n)
        self.nodes = out

    def _gemm_as_linear(self, n, uses):
        """Gemm(A, B const[, C]) -> Linear(A, W [OUT, IN], bias [OUT]) with alpha/beta folded, or None."""
        ins = n.inputs
        B = np.asarray(self.consts[ins[1]])
        if B.ndim != 2 or B.dtype.kind != "f":
            return None
        alpha, beta = float(n.attrs.get("alpha", 1.0)), float(n.attrs.get("beta", 1.0))
        wname = ins[1]
        if not n.attrs.get("transB", 0) or alpha != 1.0:
            W = (B if n.attrs.get("transB", 0) else B.T).astype(np.float64) * alpha
            wname = self._derive(ins[1], np.ascontiguousarray(W, np.float32), "t", uses)
        out_features = self.consts[wname].shape[0]
        bname = ins[2] if len(ins) > 2 else ""
        if bname in self.consts:
            c = np.asarray(self.consts[bname], np.float64) * beta
            if c.ndim == 2 and c.shape[0] > 1 and c.shape[1] == out_features:
                # a per-row C [M, N]: added after the product (the model is then fixed to M rows)
                if beta != 1.0:
                    bname = self._derive(bname, c.astype(np.float32), "b", uses)
                return _Node("Linear", n.name, [ins[0], wname, bname], n.outputs[:1], {"gemm": 1})
            if not (c.size in (1, out_features) and (c.ndim <= 1 or (c.ndim == 2 and c.shape[0] == 1))):
                return None
            if beta != 1.0 or c.shape != (out_features,):
                bname = self._derive(bname, np.broadcast_to(c.reshape(-1), (out_features,)).astype(np.float32),
                                     "b", uses)
        elif bname and beta != 1.0:
            return None
        return _Node("Linear", n.name, [ins[0], wname, bname], n.outputs[:1], {"gemm": 1})

    def _fold_pads(self):
        consumers = {}
        for n in self.nodes:
            for k, i in enumerate(n.inputs):
                consumers.setdefault(i, []).append((n, k))
        drop = set()
        for p in self.nodes:
            if p.op != "Pad" or p.attrs.get("mode", "constant") != "constant" or p.outputs[0] in self.output_names:
                continue
            pads = p.attrs.get("pads") if self.opset < 11 else self._const(p.inputs[1] if len(p.inputs) > 1 else "")
            value = p.attrs.get("value", 0.0) if self.opset < 11 else (
                self._const(p.inputs[2]) if len(p.inputs) > 2 and p.inputs[2] else 0.0)
            if pads is None or value is None or (len(p.inputs) > 3 and p.inputs[3]):
                continue
            pads = [int(v) for v in np.asarray(pads).reshape(-1)]
            r = len(pads) // 2
            if float(np.asarray(value).reshape(-1)[0] if np.size(value) else 0.0) != 0.0 or r < 3 or min(pads) < 0 \
                    or pads[0] or pads[1] or pads[r] or pads[r + 1]:
                continue
            cons = consumers.get(p.outputs[0], [])
            if not cons or any(c.op != "Conv" or k != 0 or c.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID")
                               for c, k in cons):
                continue
            sp = pads[2:r] + pads[r + 2:]
            for c, _ in cons:
                cur = list(c.attrs.get("pads") or [0] * (2 * (r - 2)))
                if c.attrs.get("auto_pad", "NOTSET") == "VALID":
                    cur = [0] * (2 * (r - 2))
                c.attrs["pads"] = [a + b for a, b in zip(cur, sp)]
                c.attrs["auto_pad"] = "NOTSET"
                c.inputs[0] = p.inputs[0]
            drop.add(id(p))
        if drop:
            self.nodes = [n for n in self.nodes if id(n) not in drop]

    def _ranks(self):
        r = {name: (len(d) if d is not None else None) for name, d, _ in self.inputs}
        for k, v in self.consts.items():
            r[k] = np.ndim(v)
        same = {"Relu", "Sigmoid", "Tanh", "LeakyRelu", "BatchNormalization", "Conv", "ConvTranspose", "MaxPool",
                "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LRN", "Dropout", "Identity", "Affine",
                "Concat", "Resize", "Upsample", "Pad", "Softmax", "Sum", "Slice", "Add", "Linear"}
        for n in self.nodes:
            x = r.get(n.inputs[0]) if n.inputs else None
            if n.op in same:
                out = x
            elif n.op in ("Flatten", "Gemm"):
                out = 2
            elif n.op == "MatMul":
                out = x
            elif n.op == "Reshape" and len(n.inputs) > 1 and n.inputs[1] in self.consts:
                out = int(np.size(self.consts[n.inputs[1]]))
            else:
                out = None
            if n.op == "Linear" and n.attrs.get("vector") and out is not None:
                out -= 1
            for o in n.outputs:
                r[o] = out
        return r

    def _fold_affines(self):
        ranks = self._ranks()
        uses = self._uses()
        prod = self._producers()
        drop = set()
        for a in self.nodes:
            if a.op != "Affine":
                continue
            p = prod.get(a.inputs[0])
            if p is None or id(p) in drop or uses[a.inputs[0]] != 1 or a.inputs[0] in self.output_names:
                continue
            if not self._fold_into(p, a, ranks, uses):
                continue
            drop.add(id(a))
            p.outputs[0] = a.outputs[0]
            prod[a.outputs[0]] = p
            ranks[a.outputs[0]] = ranks.get(a.inputs[0])
        if drop:
            self.nodes = [n for n in self.nodes if id(n) not in drop]

    def _fold_into(self, p, a, ranks, uses):
        """Folds Affine `a` into producer `p` when exact; returns whether it did."""
        c = self.consts
        ins = p.inputs
        if p.op in ("Conv", "ConvTranspose"):
            if len(ins) < 2 or ins[1] not in c or (len(ins) > 2 and ins[2] and ins[2] not in c):
                return False
            W = np.asarray(c[ins[1]], np.float64)
            g = int(p.attrs.get("group", 1))
            C = W.shape[0] if p.op == "Conv" else W.shape[1] * g
            rank, axis = W.ndim, 1
        elif p.op == "Linear":
            if ins[1] not in c or (ins[2] and ins[2] not in c):
                return False
            W = np.asarray(c[ins[1]], np.float64)
            C, rank = W.shape[0], ranks.get(ins[0])
            axis = None if rank is None else rank - 1
            if p.attrs.get("vector"):
                return False
        elif p.op == "BatchNormalization":
            if len(ins) < 5 or any(i not in c for i in ins[1:5]) or len([o for o in p.outputs if o]) > 1:
                return False
            C, rank = np.size(c[ins[1]]), ranks.get(ins[0])
            axis = 1
        else:
            return False
        vecs = []
        for v, dflt in ((a.attrs["scale"], 1.0), (a.attrs["shift"], 0.0)):
            if v is None:
                vecs.append(np.full(C, dflt))
                continue
            v = np.asarray(v, np.float64)
            if v.size == 1 and v.ndim <= (rank if rank is not None else 2):
                vecs.append(np.full(C, v.reshape(-1)[0]))
                continue
            if rank is None or axis is None or v.ndim > rank:
                return False
            shape = (1,) * (rank - v.ndim) + v.shape
            if _varying_axes(shape) != [axis] or shape[axis] != C:
                return False
            vecs.append(v.reshape(-1))
        s, t = vecs
        if p.op == "Conv":
            Wn = W * s.reshape((-1,) + (1,) * (W.ndim - 1))
            b = np.asarray(c[ins[2]], np.float64) if len(ins) > 2 and ins[2] else np.zeros(C)
        elif p.op == "ConvTranspose":
            g = int(p.attrs.get("group", 1))
            k = W.shape[2:]
            Wn = (W.reshape((g, W.shape[0] // g, W.shape[1]) + k)
                  * s.reshape((g, 1, W.shape[1]) + (1,) * len(k))).reshape(W.shape)
            b = np.asarray(c[ins[2]], np.float64) if len(ins) > 2 and ins[2] else np.zeros(C)
        elif p.op == "Linear":
            Wn = W * s[:, None]
            b = np.asarray(c[ins[2]], np.float64) if ins[2] else np.zeros(C)
        else:  # BatchNormalization: y' = (s*scale) * xhat + (s*B + t)
            Wn = np.asarray(c[ins[1]], np.float64) * s
            b = np.asarray(c[ins[2]], np.float64)
        bn = b * s + t
        new_w = self._derive(ins[1], Wn.astype(np.float32), "folded", uses)
        bias_slot = 2
        old_b = ins[bias_slot] if len(ins) > bias_slot else ""
        if old_b:
            new_b = self._derive(old_b, bn.astype(np.float32), "folded", uses)
        else:
            # a new bias, named after the weight ("conv1.weight" -> "conv1.bias")
            new_b = ins[1][:-len(".weight")] + ".bias" if ins[1].endswith(".weight") else ins[1] + "_bias"
            k = 1
            while new_b in c:
                new_b, k = f"{ins[1]}_bias{k}", k + 1
            c[new_b] = bn.astype(np.float32)
        p.inputs = list(ins) + [""] * (3 - len(ins)) if len(ins) < 3 else list(ins)
        p.inputs[1], p.inputs[bias_slot] = new_w, new_b
        uses[new_w] = uses[new_b] = 1
        return True

    def _merge_affines(self):
        uses = self._uses()
        prod = self._producers()
        drop = set()
        for a in self.nodes:
            if a.op != "Affine":
                continue
            p = prod.get(a.inputs[0])
            if p is None or p.op != "Affine" or id(p) in drop or uses[a.inputs[0]] != 1 \
                    or a.inputs[0] in self.output_names:
                continue
            s1 = 1.0 if p.attrs["scale"] is None else np.asarray(p.attrs["scale"], np.float64)
            t1 = 0.0 if p.attrs["shift"] is None else np.asarray(p.attrs["shift"], np.float64)
            s2 = 1.0 if a.attrs["scale"] is None else np.asarray(a.attrs["scale"], np.float64)
            t2 = 0.0 if a.attrs["shift"] is None else np.asarray(a.attrs["shift"], np.float64)
            s, t = np.asarray(s1 * s2), np.asarray(t1 * s2 + t2)
            if isinstance(_affine_layout(s, t), str):
                continue
            a.attrs = {"scale": s, "shift": t, "from": a.attrs["from"]}
            a.inputs[0] = p.inputs[0]
            drop.add(id(p))
            prod[a.outputs[0]] = a
        if drop:
            self.nodes = [n for n in self.nodes if id(n) not in drop]

    def _assign_params(self):
        """Constants read as weights become module parameters (trainable) or buffers (BN statistics,
        affine constants); the rest (shapes, scales, pads) stay Python constants."""
        slots = {"Conv": {1: True, 2: True}, "ConvTranspose": {1: True, 2: True}, "Linear": {1: True, 2: True},
                 "Gemm": {1: True, 2: True}, "BatchNormalization": {1: True, 2: True, 3: False, 4: False}}
        self.params = {}       # onnx name -> (key, shape, trainable)
        self.param_values = []  # (key, float32 array, trainable)
        taken = set()
        for n in self.nodes:
            for k, trainable in slots.get(n.op, {}).items():
                name = n.inputs[k] if k < len(n.inputs) else ""
                if not name or name not in self.consts or name in self.params:
                    continue
                v = np.asarray(self.consts[name])
                if v.dtype.kind != "f":
                    self.static_problems.append((n.name, n.op, f"weight {name!r} has dtype {v.dtype} (float only)"))
                    continue
                key = sanitize(name, taken)
                self.params[name] = (key, tuple(v.shape), trainable)
                self.param_values.append((key, np.ascontiguousarray(v, np.float32), trainable))
        for n in self.nodes:
            if n.op != "Affine":
                continue
            lay = _affine_layout(n.attrs["scale"], n.attrs["shift"])
            if isinstance(lay, str):
                n.attrs["problem"] = lay
                continue
            d, afe, ndim, s, t = lay
            base = sanitize(n.name, taken)
            keys = []
            for suffix, v in (("weight", s), ("bias", t), ("running_mean", np.zeros(d)), ("running_var", np.ones(d))):
                key = sanitize(f"{base}.{suffix}", taken)
                self.params[f"\0{key}"] = (key, (d,), False)
                self.param_values.append((key, np.ascontiguousarray(v, np.float32), False))
                keys.append(f"\0{key}")
            n.attrs.update(d=d, afe=afe, ndim=ndim, keys=keys)
        # the module holds the weights; keep no second copy unless a node also reads one as a constant
        as_const = {i for n in self.nodes for k, i in enumerate(n.inputs) if i and k not in slots.get(n.op, {})}
        for name in self.params:
            if name in self.consts and name not in as_const and name not in self.output_names:
                del self.consts[name]

    # ---- checks ----
    def unknown_op_problems(self):
        have = _engine_ops()
        probs = []
        for n in self.nodes:
            h = _HANDLERS.get(n.op)
            if h is None:
                probs.append((n.name, n.op, "operators outside the default ONNX domain are not supported"
                              if "." in n.op else "operator not supported"))
                continue
            missing = [e for e in _NEEDS.get(n.op, ()) if e not in have]
            if missing:
                probs.append((n.name, n.op, f"needs the engine op {missing[0]!r}, which this build of cnnnative lacks"))
        return probs

    def dry_shapes(self):
        """Input shapes to validate with (symbolic batch -> 1), or None when a dimension is unknown."""
        shapes = []
        for k, (name, dims, _) in enumerate(self.inputs):
            if dims is None:
                return None
            dims = [1 if (d is None and i == 0) else d for i, d in enumerate(dims)]
            if any(d is None for d in dims) or len(dims) == 0:
                return None
            shapes.append(dims)
        return shapes

    # ---- replay ----
    def run(self, xs):
        """Emits the graph under the current GraphBuilder; returns the outputs (Tensor or numpy constant).
        Raises UnsupportedError listing every node that could not be emitted."""
        b = current()
        if len(xs) != len(self.input_names):
            raise ValueError(f"this ONNX model takes {len(self.input_names)} input(s) "
                             f"({', '.join(self.input_names)}), got {len(xs)}")
        tr = _Trace(self, b)
        for name, x in zip(self.input_names, xs):
            if not isinstance(x, Tensor):
                raise TypeError(f"input {name!r}: expected a traced Tensor, got {type(x).__name__}")
            tr.env[name] = x
        problems = list(self.static_problems)
        poisoned = set()
        for node in self.nodes:
            if any(i in poisoned for i in node.inputs if i):
                poisoned.update(o for o in node.outputs if o)
                if node.op not in _HANDLERS and node.op not in _FOLDABLE and "." not in node.op:
                    problems.append((node.name, node.op, "operator not supported"))
                continue
            try:
                outs = tr.node(node)
            except _Unsupported as e:
                problems.append((node.name, node.op, str(e)))
                poisoned.update(o for o in node.outputs if o)
                continue
            except _core.Error as e:
                problems.append((node.name, node.op, f"the engine rejects it: {e}"))
                poisoned.update(o for o in node.outputs if o)
                continue
            if not isinstance(outs, (list, tuple)):
                outs = [outs]
            for o, v in zip(node.outputs, outs):
                if o:
                    tr.env[o] = v
        if problems:
            raise UnsupportedError(problems)
        res = []
        for o in self.output_names:
            v = tr.env.get(o)
            if v is None:
                if o in self.consts:
                    v = np.asarray(self.consts[o])
                elif o in self.params:
                    v = tr.tensor(o)
                else:
                    raise ValueError(f"graph output {o!r} is produced by no node")
            res.append(v)
        return res


# ---------------------------------------------------------------------------------------------------
# tracing: one node at a time


class _Trace:
    def __init__(self, prog: _Program, builder):
        self.p, self.b, self.env = prog, builder, {}

    def tensor(self, name):
        v = self.env.get(name)
        if isinstance(v, Tensor):
            return v
        if name in self.p.params:
            key, shape, trainable = self.p.params[name]
            return self.b.param(key, shape, trainable)
        return None

    def node(self, node):
        h = _HANDLERS.get(node.op)
        vals = [self.value(i) for i in node.inputs]
        if node.op in _FOLDABLE and any(v is not None for v in vals) and \
                all(v is None or isinstance(v, np.ndarray) for v in vals):
            return [np.asarray(v) for v in _fold(node, vals)]
        if node.op == "Shape" and vals and isinstance(vals[0], Tensor):
            return _fold(node, vals)
        if h is None:
            if "." in node.op:
                raise _Unsupported("operators outside the default ONNX domain are not supported")
            if node.op in _FOLDABLE:
                raise _Unsupported("supported on constants only (folded at import); here an input is computed "
                                   "from the model input")
            raise _Unsupported("operator not supported")
        return h(_Ctx(self, node, vals))

    def value(self, name):
        if not name:
            return None
        if name in self.env:
            return self.env[name]
        if name in self.p.consts:
            return np.asarray(self.p.consts[name])
        if name in self.p.params:
            return self.tensor(name)
        raise _Unsupported(f"input {name!r} is not produced by any node")


class _Ctx:
    """What a handler sees of one node: its attributes, inputs as tensors or constants, and an emitter."""

    def __init__(self, tr: _Trace, node: _Node, vals):
        self.tr, self.node, self.vals, self.k = tr, node, vals, 0
        self.b = tr.b

    @property
    def opset(self):
        return self.tr.p.opset

    def attr(self, name, default=None):
        return self.node.attrs.get(name, default)

    def ints(self, name, default, n):
        v = self.node.attrs.get(name)
        if v is None:
            return [default] * n
        v = [int(x) for x in v]
        if len(v) != n:
            raise _Unsupported(f"attribute {name}={v} has {len(v)} values, expected {n}")
        return v

    def has(self, k):
        return k < len(self.node.inputs) and bool(self.node.inputs[k])

    def t(self, k, what="input"):
        """Input k as a traced tensor (a weight held by the module is a tensor too)."""
        name = self.node.inputs[k] if k < len(self.node.inputs) else ""
        v = self.vals[k] if k < len(self.vals) else None
        if isinstance(v, Tensor):
            return v
        t = self.tr.tensor(name) if name else None
        if t is not None:
            return t
        if v is None:
            raise _Unsupported(f"missing {what}")
        if isinstance(v, np.ndarray) and v.dtype.kind == "f" and v.ndim >= 1 and v.size and np.all(v == v.flat[0]) \
                and "fill" in _engine_ops():
            return self.op("fill", [], {"shape": [int(d) for d in v.shape], "value": float(v.flat[0])})
        raise _Unsupported(f"{what} {name!r} is a constant here; the engine needs it computed from the model "
                           "input (constant tensors are only supported as weights, or when all values are equal)")

    def c(self, k, what="input"):
        """Input k as a numpy constant (None when absent)."""
        if not self.has(k):
            return None
        v = self.vals[k]
        if isinstance(v, np.ndarray):
            return v
        name = self.node.inputs[k]
        if name in self.tr.p.consts:
            return np.asarray(self.tr.p.consts[name])
        raise _Unsupported(f"{what} {name!r} must be a constant (an initializer or computable from shapes)")

    def need(self, *ops):
        have = _engine_ops()
        for op in ops:
            if op not in have:
                raise _Unsupported(f"needs the engine op {op!r}, which this build of cnnnative lacks")

    def op(self, op, inputs, attrs=None, n_out=None):
        name = self.node.name if self.k == 0 else f"{self.node.name}:{op}{self.k}"
        self.k += 1
        outs = self.b.op(op, inputs, attrs or {}, name)
        return outs if n_out else outs[0]

    # ---- composite emitters ----
    def reshape(self, x, shape):
        shape = [int(s) for s in shape]
        if list(x.shape) == shape:
            return x
        return self.op("reshape", [x], {"shape": shape})

    def crop(self, x, axis, start, length):
        """x[..., start:start+length, ...] along axis (split)."""
        n = x.shape[axis]
        if start == 0 and length == n:
            return x
        if length <= 0:
            raise _Unsupported(f"the result would be empty along axis {axis}")
        self.need("split")
        parts = [(s, i) for i, s in enumerate((start, length, n - start - length)) if s > 0]
        outs = self.op("split", [x], {"axis": int(axis), "sizes": [s for s, _ in parts]}, n_out=True)
        return outs[[i for _, i in parts].index(1)]

    def pad(self, x, axis, before, after, value):
        """Explicit constant padding along axis: concat with `fill` tensors (negative amounts crop)."""
        if before < 0 or after < 0:
            n = x.shape[axis]
            x = self.crop(x, axis, max(0, -before), n - max(0, -before) - max(0, -after))
            before, after = max(0, before), max(0, after)
        if before == 0 and after == 0:
            return x
        self.need("fill", "concat")
        parts = []
        for amount, where in ((before, 0), (after, 1)):
            if amount:
                s = list(x.shape)
                s[axis] = amount
                f = self.op("fill", [], {"shape": s, "value": float(value)})
                parts.append((where, f))
        seq = [f for w, f in parts if w == 0] + [x] + [f for w, f in parts if w == 1]
        return self.op("concat", seq, {"axis": int(axis)})

    def batch_norm(self, x, w, b_, mean, var, eps, momentum, training):
        attrs = {"eps": float(eps), "momentum": float(momentum), "training": int(training),
                 "track_running_stats": 1}
        return self.op("batch_norm", [x, w, b_, mean, var], attrs, n_out=True)[0]


# ---------------------------------------------------------------------------------------------------
# handlers: one per supported ONNX op


def _spatial_pads(c: _Ctx, in_sp, k_eff, strides):
    sd = len(in_sp)
    auto = c.attr("auto_pad", "NOTSET") or "NOTSET"
    if auto == "NOTSET":
        pads = c.attr("pads")
        pads = [0] * (2 * sd) if pads is None else [int(p) for p in pads]
        if len(pads) != 2 * sd:
            raise _Unsupported(f"pads={pads} should hold {2 * sd} values")
        if min(pads) < 0:
            raise _Unsupported(f"negative pads {pads}")
        return list(zip(pads[:sd], pads[sd:]))
    if auto == "VALID":
        return [(0, 0)] * sd
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = []
        for i, s, k in zip(in_sp, strides, k_eff):
            total = max((-(-i // s) - 1) * s + k - i, 0)
            small, big = total // 2, total - total // 2
            out.append((small, big) if auto == "SAME_UPPER" else (big, small))
        return out
    raise _Unsupported(f"auto_pad={auto!r}")


def _conv_out(n, k_eff, s, pb, pe):
    return (n + pb + pe - k_eff) // s + 1


def _pool_out(n, k_eff, s, pb, pe, ceil):
    num = n + pb + pe - k_eff
    o = (-(-num // s) if ceil else num // s) + 1
    if ceil and (o - 1) * s >= n + pb:
        o -= 1
    return o


def _to_2d(c, x, what):
    """[N, C, L] -> [N, C, 1, L] for 1-D ops; 4-D passes; others are unsupported."""
    r = len(x.shape)
    if r == 4:
        return x, False
    if r == 3:
        return c.reshape(x, [x.shape[0], x.shape[1], 1, x.shape[2]]), True
    raise _Unsupported(f"{r - 2}-D {what} (input {list(x.shape)}); only 1-D and 2-D are supported")


def h_conv(c: _Ctx):
    x, w = c.t(0, "X"), c.t(1, "W")
    bias = c.t(2, "B") if c.has(2) else None
    r = len(x.shape)
    if r not in (3, 4):
        raise _Unsupported(f"{r - 2}-D convolution (input {list(x.shape)}); only 1-D and 2-D are supported")
    if len(w.shape) != r:
        raise _Unsupported(f"W {list(w.shape)} does not match X {list(x.shape)}")
    sd = r - 2
    ks = list(w.shape[2:])
    if c.attr("kernel_shape") is not None and [int(k) for k in c.attr("kernel_shape")] != ks:
        raise _Unsupported(f"kernel_shape={list(c.attr('kernel_shape'))} disagrees with W {list(w.shape)}")
    strides, dil = c.ints("strides", 1, sd), c.ints("dilations", 1, sd)
    group = int(c.attr("group", 1))
    k_eff = [(k - 1) * d + 1 for k, d in zip(ks, dil)]
    pads = _spatial_pads(c, x.shape[2:], k_eff, strides)
    in_sp = list(x.shape[2:])
    one_d = sd == 1
    if one_d:
        x = c.reshape(x, [x.shape[0], x.shape[1], 1, x.shape[2]])
        w = c.reshape(w, [w.shape[0], w.shape[1], 1, w.shape[2]])
        strides, dil, k_eff, pads, in_sp = [1] + strides, [1] + dil, [1] + k_eff, [(0, 0)] + pads, [1] + in_sp
    sym = []
    for ax, ((pb, pe), n, k, s) in enumerate(zip(pads, in_sp, k_eff, strides)):
        if pb == pe or _conv_out(n, k, s, pb, pb) == _conv_out(n, k, s, pb, pe):
            sym.append(pb)
        else:
            m = min(pb, pe)
            x = c.pad(x, 2 + ax, pb - m, pe - m, 0.0)
            sym.append(m)
    ins = [x, w] + ([bias] if bias is not None else [])
    y = c.op("conv2d", ins, {"stride": strides, "padding": sym, "dilation": dil, "groups": group})
    if one_d:
        y = c.reshape(y, [y.shape[0], y.shape[1], y.shape[3]])
    return y


def h_conv_transpose(c: _Ctx):
    c.need("conv_transpose2d")
    x, w = c.t(0, "X"), c.t(1, "W")
    bias = c.t(2, "B") if c.has(2) else None
    r = len(x.shape)
    if r not in (3, 4) or len(w.shape) != r:
        raise _Unsupported(f"{r - 2}-D transposed convolution (X {list(x.shape)}, W {list(w.shape)}); "
                           "only 1-D and 2-D are supported")
    sd = r - 2
    ks = list(w.shape[2:])
    if c.attr("kernel_shape") is not None and [int(k) for k in c.attr("kernel_shape")] != ks:
        raise _Unsupported(f"kernel_shape={list(c.attr('kernel_shape'))} disagrees with W {list(w.shape)}")
    strides, dil = c.ints("strides", 1, sd), c.ints("dilations", 1, sd)
    opad = c.ints("output_padding", 0, sd)
    group = int(c.attr("group", 1))
    in_sp = list(x.shape[2:])
    full = [s * (i - 1) + (k - 1) * d + 1 for s, i, k, d in zip(strides, in_sp, ks, dil)]
    oshape = c.attr("output_shape")
    if oshape is not None:
        oshape = [int(v) for v in oshape][-sd:]
    auto = c.attr("auto_pad", "NOTSET") or "NOTSET"
    crops = []  # (start crop, end crop relative to the full output; negative end = extension)
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        target = oshape or [i * s for i, s in zip(in_sp, strides)]
        for f, op_, t in zip(full, opad, target):
            total = f + op_ - t
            pb = total // 2 if auto == "SAME_UPPER" else total - total // 2
            crops.append((pb, f - pb - t))
    elif auto in ("NOTSET", "VALID"):
        pads = [0] * (2 * sd) if auto == "VALID" or c.attr("pads") is None else [int(p) for p in c.attr("pads")]
        if len(pads) != 2 * sd:
            raise _Unsupported(f"pads={pads} should hold {2 * sd} values")
        for ax in range(sd):
            pb, pe = pads[ax], pads[sd + ax]
            if oshape is not None:
                crops.append((pb, full[ax] - pb - oshape[ax]))
            else:
                crops.append((pb, pe - opad[ax]))
    else:
        raise _Unsupported(f"auto_pad={auto!r}")
    one_d = sd == 1
    if one_d:
        x = c.reshape(x, [x.shape[0], x.shape[1], 1, x.shape[2]])
        w = c.reshape(w, [w.shape[0], w.shape[1], 1, w.shape[2]])
        strides, dil, crops = [1] + strides, [1] + dil, [(0, 0)] + crops
    padding, out_pad, extra = [], [], []
    for (cs, ce), s, d in zip(crops, strides, dil):
        if cs < 0:
            raise _Unsupported(f"pads/output_shape need {-cs} extra row(s) before the output")
        if 0 <= cs - ce < max(s, d):
            padding.append(cs), out_pad.append(cs - ce), extra.append((0, 0))
        elif ce >= 0:
            p = min(cs, ce)
            padding.append(p), out_pad.append(0), extra.append((cs - p, ce - p))
        else:
            raise _Unsupported(f"output_padding/output_shape extend the output by {-ce} beyond what the "
                               f"engine's output_padding (< stride {s} or dilation {d}) allows")
    ins = [x, w] + ([bias] if bias is not None else [])
    y = c.op("conv_transpose2d", ins, {"stride": strides, "padding": padding, "output_padding": out_pad,
                                       "dilation": dil, "groups": group})
    for ax, (s0, e0) in enumerate(extra):
        if s0 or e0:
            n = y.shape[2 + ax]
            y = c.crop(y, 2 + ax, s0, n - s0 - e0)
    if one_d:
        y = c.reshape(y, [y.shape[0], y.shape[1], y.shape[3]])
    return y


def _pool(c: _Ctx, kind):
    x = c.t(0, "X")
    if kind == "max" and len(c.node.outputs) > 1 and c.node.outputs[1]:
        raise _Unsupported("the Indices output is not supported")
    r = len(x.shape)
    if r not in (3, 4):
        raise _Unsupported(f"{r - 2}-D pooling (input {list(x.shape)}); only 1-D and 2-D are supported")
    sd = r - 2
    ks = c.attr("kernel_shape")
    if ks is None or len(ks) != sd:
        raise _Unsupported(f"kernel_shape={ks} for a {sd}-D input")
    ks = [int(k) for k in ks]
    strides, dil = c.ints("strides", 1, sd), c.ints("dilations", 1, sd)
    if kind == "avg" and any(d != 1 for d in dil):
        raise _Unsupported(f"dilations={dil} (the engine's average pooling has no dilation)")
    ceil = int(c.attr("ceil_mode", 0))
    cip = int(c.attr("count_include_pad", 0))
    if kind == "max" and int(c.attr("storage_order", 0)) != 0 and len(c.node.outputs) > 1:
        raise _Unsupported("storage_order=1")
    k_eff = [(k - 1) * d + 1 for k, d in zip(ks, dil)]
    in_sp = list(x.shape[2:])
    pads = _spatial_pads(c, in_sp, k_eff, strides)
    expect = [_pool_out(n, k, s, pb, pe, ceil) for n, k, s, (pb, pe) in zip(in_sp, k_eff, strides, pads)]
    if min(expect) < 1:
        raise _Unsupported(f"kernel {ks} does not fit input {list(x.shape)} with pads {pads}")
    x, one_d = _to_2d(c, x, "pooling")
    if one_d:
        ks, strides, dil, k_eff, pads, in_sp = [1] + ks, [1] + strides, [1] + dil, [1] + k_eff, [(0, 0)] + pads, \
            [1] + in_sp
    sym, crops = [], {}
    for ax, ((pb, pe), n, k, ke, s) in enumerate(zip(pads, in_sp, ks, k_eff, strides)):
        half = k // 2
        o = _pool_out(n, ke, s, pb, pe, ceil)
        if pb == pe and pb <= half:
            sym.append(pb)
            continue
        if pb != pe and pb <= half and _pool_out(n, ke, s, pb, pb, ceil) == o:
            end = (o - 1) * s + ke - 1  # padded coordinates of the last window's last cell
            if kind == "max" or not cip or min(end, n + pb + pe - 1) == min(end, n + 2 * pb - 1):
                sym.append(pb)
                continue
        p = max(pb, pe)  # symmetric max(pb, pe), then drop the leading windows (they are stride-aligned)
        if not ceil and p <= half and (p - pb) % s == 0 and (n + 2 * p - ke) // s + 1 >= (p - pb) // s + o:
            c.need("split")
            sym.append(p)
            crops[ax] = ((p - pb) // s, o)
            continue
        if kind == "avg" and not cip:
            raise _Unsupported(f"pads {list(pads[ax])} on axis {ax} with count_include_pad=0 cannot be "
                               "expressed with the engine's symmetric pool padding")
        m = min(pb, pe, half)
        x = c.pad(x, 2 + ax, pb - m, pe - m, _NEG_BIG if kind == "max" else 0.0)
        sym.append(m)
    attrs = {"kernel": ks, "stride": strides, "padding": sym, "ceil_mode": ceil}
    if kind == "max":
        attrs.update(dilation=dil, training=int(c.b.training))
        y = c.op("max_pool2d", [x], attrs, n_out=True)[0]
    else:
        attrs["count_include_pad"] = 1 if cip else 0
        y = c.op("avg_pool2d", [x], attrs)
    for ax, (start, length) in crops.items():
        y = c.crop(y, 2 + ax, start, length)
    got = list(y.shape[3:]) if one_d else list(y.shape[2:])
    if got != expect:
        raise _Unsupported(f"ceil_mode={ceil} with pads {pads}: the engine gives spatial size {got}, ONNX {expect}")
    if one_d:
        y = c.reshape(y, [y.shape[0], y.shape[1], y.shape[3]])
    return y


def h_maxpool(c):
    return _pool(c, "max")


def h_avgpool(c):
    return _pool(c, "avg")


def h_global_avg(c: _Ctx):
    x = c.t(0, "X")
    x4, one_d = _to_2d(c, x, "global pooling")
    y = c.op("global_avg_pool", [x4])
    return c.reshape(y, list(x.shape[:2]) + [1] * (len(x.shape) - 2)) if one_d else y


def h_global_max(c: _Ctx):
    x = c.t(0, "X")
    x4, one_d = _to_2d(c, x, "global pooling")
    h, w = x4.shape[2], x4.shape[3]
    y = c.op("max_pool2d", [x4], {"kernel": [h, w], "stride": [h, w], "training": int(c.b.training)}, n_out=True)[0]
    return c.reshape(y, list(x.shape[:2]) + [1] * (len(x.shape) - 2)) if one_d else y


def h_batchnorm(c: _Ctx):
    x = c.t(0, "X")
    if int(c.attr("training_mode", 0)):
        raise _Unsupported("training_mode=1 (batch statistics as outputs); export the model in eval mode")
    if any(o for o in c.node.outputs[1:]):
        raise _Unsupported("the running-statistics outputs (training mode) are not supported")
    if int(c.attr("spatial", 1)) != 1:
        raise _Unsupported("spatial=0")
    params = [c.t(k, n) for k, n in ((1, "scale"), (2, "B"), (3, "mean"), (4, "var"))]
    eps, mom = float(c.attr("epsilon", 1e-5)), float(c.attr("momentum", 0.9))
    r = len(x.shape)
    if r in (2, 4):
        return c.batch_norm(x, *params, eps, 1.0 - mom, c.b.training)
    if r == 3:
        y = c.batch_norm(c.reshape(x, list(x.shape) + [1]), *params, eps, 1.0 - mom, c.b.training)
        return c.reshape(y, x.shape)
    raise _Unsupported(f"input of rank {r} (2-D, 3-D and 4-D are supported)")


def h_linear(c: _Ctx):
    x, w = c.t(0, "A"), c.t(1, "B")
    bias = c.t(2, "C") if c.has(2) else None
    post = None  # a computed Gemm C of the output's full shape is added after the product
    if bias is not None and int(np.prod(bias.shape)) != w.shape[0]:
        bias, post = None, bias
    if bias is not None and list(bias.shape) != [w.shape[0]]:
        bias = c.reshape(bias, [w.shape[0]])
    r = len(x.shape)
    if c.attr("gemm") and r != 2:
        raise _Unsupported(f"A must be 2-D, got {list(x.shape)}")
    if r < 2:
        raise _Unsupported(f"a {r}-D left operand (only 2-D and batched N-D x 2-D products)")
    if x.shape[-1] != w.shape[1]:
        raise _Unsupported(f"inner dimensions differ: {list(x.shape)} x weight of {w.shape[1]} inputs")
    x2 = x if r == 2 else c.reshape(x, [-1, x.shape[-1]])
    y = c.op("linear", [x2, w] + ([bias] if bias is not None else []))
    out = list(x.shape[:-1]) + ([] if c.attr("vector") else [w.shape[0]])
    y = c.reshape(y, out)
    if post is not None:
        if list(post.shape) != out:
            raise _Unsupported(f"C {list(post.shape)} neither a bias of {w.shape[0]} values nor of the output "
                               f"shape {out}")
        y = c.op("add", [y, post])
    return y


def h_gemm(c: _Ctx):
    if int(c.attr("transA", 0)):
        raise _Unsupported("transA=1 (the engine has no transpose; only A [M, K] is supported)")
    if not int(c.attr("transB", 0)) or float(c.attr("alpha", 1.0)) != 1.0:
        raise _Unsupported("B must be a constant when transB=0 or alpha != 1 (it is transposed/scaled at import)")
    if c.has(2) and float(c.attr("beta", 1.0)) != 1.0:
        raise _Unsupported("C must be a constant when beta != 1")
    x, w = c.t(0, "A"), c.t(1, "B")
    if len(x.shape) != 2:
        raise _Unsupported(f"A must be 2-D, got {list(x.shape)}")
    ins = [x, w]
    if c.has(2):
        bias = c.t(2, "C")
        if int(np.prod(bias.shape)) != w.shape[0]:
            raise _Unsupported(f"C {list(bias.shape)} is not a bias of {w.shape[0]} values")
        ins.append(c.reshape(bias, [w.shape[0]]))
    return c.op("linear", ins)


def h_matmul(c: _Ctx):
    raise _Unsupported("MatMul of two computed tensors (only a constant 1-D/2-D right operand, as a linear layer)")


def _act(op, **attrs):
    def h(c: _Ctx):
        extra = {k: float(c.attr(k2, d)) for k, (k2, d) in attrs.items()}
        return c.op(op, [c.t(0, "X")], extra)
    return h


def h_affine(c: _Ctx):
    if "problem" in c.node.attrs:
        raise _Unsupported(c.node.attrs["problem"])
    x = c.t(0, "X")
    a = c.node.attrs
    s = list(x.shape)
    r = len(s)
    if a["ndim"] > r:
        raise _Unsupported(f"the constant operand has rank {a['ndim']} > the tensor's rank {r} (broadcast grows it)")
    keys = [c.tr.tensor(k) for k in a["keys"]]
    if a["afe"] is None:
        x2 = c.reshape(x, [int(np.prod(s)), 1])
    else:
        axis = r - a["afe"]
        if s[axis] != a["d"]:
            raise _Unsupported(f"the constant of size {a['d']} along axis {axis} would broadcast the tensor {s}")
        if axis == 1 and r in (2, 4):
            x2 = x
        else:
            x2 = c.reshape(x, [int(np.prod(s[:axis])), s[axis], int(np.prod(s[axis + 1:])), 1])
    y = c.batch_norm(x2, *keys, 0.0, 0.0, False)
    return c.reshape(y, s)


def _binary_tensors(c: _Ctx, what):
    for k in range(2):
        if not isinstance(c.vals[k], Tensor):
            v = c.vals[k]
            if isinstance(v, np.ndarray):
                raise _Unsupported(f"{what} with a constant of dtype {v.dtype} {list(v.shape)} "
                                   "(float constants only, varying along at most one axis)")
    return c.t(0, "A"), c.t(1, "B")


def h_add(c: _Ctx):
    a, b = _binary_tensors(c, "Add")
    if a.shape != b.shape:
        raise _Unsupported(f"broadcasting Add of two computed tensors {list(a.shape)} + {list(b.shape)} "
                           "(same shapes only)")
    return c.op("add", [a, b])


def h_sum(c: _Ctx):
    ts = [c.t(k, f"input {k}") for k in range(len(c.node.inputs))]
    if any(t.shape != ts[0].shape for t in ts):
        raise _Unsupported(f"Sum of differently shaped tensors {[list(t.shape) for t in ts]}")
    y = ts[0]
    for t in ts[1:]:
        y = c.op("add", [y, t])
    return y


def h_mul_div(c: _Ctx):
    _binary_tensors(c, c.node.op)
    if c.node.op == "Div" and isinstance(c.vals[0], np.ndarray):
        raise _Unsupported("a constant divided by a tensor (no reciprocal op)")
    raise _Unsupported(f"{c.node.op} of two computed tensors (only by constants: scalars or per-channel)")


def h_sub(c: _Ctx):
    _binary_tensors(c, "Sub")
    raise _Unsupported("Sub of two computed tensors of different shapes")


def h_softmax(c: _Ctx):
    x = c.t(0, "X")
    s = list(x.shape)
    r = len(s)
    legacy = c.opset < 13
    axis = int(c.attr("axis", 1 if legacy else -1))
    axis = axis + r if axis < 0 else axis
    if legacy:  # coerced to 2-D [prod(:axis), prod(axis:)]
        shape2 = [int(np.prod(s[:axis])), int(np.prod(s[axis:]))]
    else:
        if int(np.prod(s[axis + 1:])) != 1:
            raise _Unsupported(f"axis={c.attr('axis', -1)} of a {s} tensor (the engine's softmax runs over the "
                               "last axis)")
        shape2 = [int(np.prod(s[:axis])), s[axis]]
    return c.reshape(c.op("softmax", [c.reshape(x, shape2)]), s)


def h_concat(c: _Ctx):
    ts = [c.t(k, f"input {k}") for k in range(len(c.node.inputs)) if c.node.inputs[k]]
    if len(ts) == 1:
        return ts[0]
    c.need("concat")
    r = len(ts[0].shape)
    axis = int(c.attr("axis"))
    return c.op("concat", ts, {"axis": axis + r if axis < 0 else axis})


def h_flatten(c: _Ctx):
    x = c.t(0, "X")
    s = list(x.shape)
    axis = int(c.attr("axis", 1))
    axis = axis + len(s) if axis < 0 else axis
    if axis == 1 and len(s) > 2:
        return c.op("flatten", [x], {"start_dim": 1, "end_dim": -1})
    return c.reshape(x, [int(np.prod(s[:axis])), int(np.prod(s[axis:]))])


def h_reshape(c: _Ctx):
    x = c.t(0, "data")
    shape = c.c(1, "shape")
    if shape is None:
        shape = np.asarray(c.attr("shape"))  # opset < 5
    allowzero = int(c.attr("allowzero", 0))
    t = [int(v) for v in np.asarray(shape).reshape(-1)]
    if allowzero and 0 in t:
        raise _Unsupported("allowzero=1 with a 0 in the shape (zero-size tensors)")
    if not allowzero:
        t = [x.shape[i] if v == 0 else v for i, v in enumerate(t)]
    s = list(x.shape)
    rest = int(np.prod(s[1:]))
    # [N, -1] / [0, -1] / [declared batch, rest]: a flatten, whatever batch the model is compiled for
    if len(t) == 2 and len(s) >= 2 and t[1] in (-1, rest) and t[0] in (s[0], c.tr.p.declared_batch):
        return x if len(s) == 2 else c.op("flatten", [x], {"start_dim": 1, "end_dim": -1})
    try:
        t = _reshape_target(s, t, 1)
    except Exception:
        raise _Unsupported(f"cannot reshape {s} to {t}") from None
    if int(np.prod(t)) != int(np.prod(s)):
        raise _Unsupported(f"cannot reshape {s} to {[int(v) for v in np.asarray(shape).reshape(-1)]}")
    return c.reshape(x, t)


def h_squeeze_unsqueeze(c: _Ctx):
    x = c.t(0, "data")
    axes = c.c(1, "axes") if c.has(1) else c.attr("axes")
    axes = None if axes is None else [int(a) for a in np.asarray(axes).reshape(-1)]
    if c.node.op == "Unsqueeze":
        if axes is None:
            raise _Unsupported("missing axes")
        return c.reshape(x, _unsqueezed_shape(list(x.shape), axes))
    return c.reshape(x, _squeezed_shape(list(x.shape), axes))


def h_identity(c: _Ctx):
    v = c.vals[0]
    return v if v is not None else c.t(0)


def h_dropout(c: _Ctx):
    x = c.t(0, "data")
    if c.opset < 12:
        ratio = float(c.attr("ratio", 0.5))
        training = False
    else:
        r = c.c(1, "ratio")
        ratio = 0.5 if r is None else float(np.asarray(r).reshape(-1)[0])
        t = c.c(2, "training_mode")
        training = bool(t is not None and np.asarray(t).reshape(-1)[0])
    if training and ratio > 0:
        raise _Unsupported("training_mode=True: random masks cannot match another runtime's")
    y = x
    if c.b.training and ratio > 0:
        y = c.op("dropout", [x], {"p": ratio, "training": 1})
    outs = [y]
    if len(c.node.outputs) > 1 and c.node.outputs[1]:
        outs.append(np.ones(x.shape, bool))
    return outs


def h_lrn(c: _Ctx):
    x = c.t(0, "X")
    size = int(c.attr("size"))
    if size % 2 == 0:
        raise _Unsupported(f"size={size}: ONNX centres an even window differently from the engine "
                           "(odd sizes only)")
    c.need("lrn")
    x4, one_d = _to_2d(c, x, "LRN")
    y = c.op("lrn", [x4], {"size": size, "alpha": float(c.attr("alpha", 1e-4)), "beta": float(c.attr("beta", 0.75)),
                           "k": float(c.attr("bias", 1.0))})
    return c.reshape(y, x.shape) if one_d else y


def h_pad(c: _Ctx):
    x = c.t(0, "data")
    mode = c.attr("mode", "constant")
    if mode != "constant":
        raise _Unsupported(f"mode={mode!r} (only 'constant')")
    r = len(x.shape)
    if c.opset < 11:
        pads, value = c.attr("pads", c.attr("paddings")), float(c.attr("value", 0.0))
        axes = None
    else:
        pads = c.c(1, "pads")
        v = c.c(2, "constant_value")
        value = 0.0 if v is None or np.size(v) == 0 else float(np.asarray(v).reshape(-1)[0])
        axes = c.c(3, "axes")
    pads = [int(p) for p in np.asarray(pads).reshape(-1)]
    axes = list(range(r)) if axes is None else [int(a) + r if a < 0 else int(a) for a in np.asarray(axes).reshape(-1)]
    n = len(axes)
    if len(pads) != 2 * n:
        raise _Unsupported(f"pads {pads} should hold {2 * n} values")
    for i, ax in enumerate(axes):
        x = c.pad(x, ax, pads[i], pads[n + i], value)
    return x


def _nearest_index(out, n, s, ctm, mode):
    o = np.arange(out, dtype=np.float64)
    if ctm in ("half_pixel", "half_pixel_symmetric"):
        src = (o + 0.5) / s - 0.5
    elif ctm == "pytorch_half_pixel":
        src = (o + 0.5) / s - 0.5 if out > 1 else np.zeros_like(o)
    elif ctm == "align_corners":
        src = o * (n - 1) / (out - 1) if out > 1 else np.zeros_like(o)
    elif ctm == "asymmetric":
        src = o / s
    elif ctm == "tf_half_pixel_for_nn":
        src = (o + 0.5) / s
    else:
        return None
    f = np.floor(src)
    d = src - f
    if mode == "round_prefer_floor":
        idx = np.where(d > 0.5, f + 1, f)
    elif mode == "round_prefer_ceil":
        idx = np.where(d >= 0.5, f + 1, f)
    elif mode == "floor":
        idx = f
    elif mode == "ceil":
        idx = np.ceil(src)
    else:
        return None
    return np.clip(idx, 0, n - 1).astype(np.int64)


def h_resize(c: _Ctx):
    x = c.t(0, "X")
    s = list(x.shape)
    r = len(s)
    op = c.node.op
    mode = c.attr("mode", "nearest")
    if mode != "nearest":
        raise _Unsupported(f"mode={mode!r} (only 'nearest')")
    if op == "Upsample" or c.opset < 11:
        ctm, nm = "asymmetric", "floor"
        scales = c.attr("scales") if (op == "Upsample" and c.opset < 9) else c.c(1, "scales")
        sizes = None
    else:
        ctm = c.attr("coordinate_transformation_mode", "half_pixel")
        nm = c.attr("nearest_mode", "round_prefer_floor")
        scales = c.c(2, "scales")
        sizes = c.c(3, "sizes")
        if int(c.attr("antialias", 0)):
            raise _Unsupported("antialias=1")
    axes = c.attr("axes")
    axes = list(range(r)) if axes is None else [int(a) + r if a < 0 else int(a) for a in axes]
    if scales is not None and np.size(scales) == 0:
        scales = None
    if sizes is not None and np.size(sizes) == 0:
        sizes = None
    full = [1.0] * r
    if scales is not None:
        vals = [float(v) for v in np.asarray(scales).reshape(-1)]
        if len(vals) != len(axes):
            raise _Unsupported(f"scales {vals} do not match axes {axes}")
        for a, v in zip(axes, vals):
            full[a] = v
        outs = [int(math.floor(n * f)) for n, f in zip(s, full)]
    elif sizes is not None:
        vals = [int(v) for v in np.asarray(sizes).reshape(-1)]
        if len(vals) != len(axes):
            raise _Unsupported(f"sizes {vals} do not match axes {axes}")
        policy = c.attr("keep_aspect_ratio_policy", "stretch")
        ratios = [v / s[a] for a, v in zip(axes, vals)]
        if policy in ("not_larger", "not_smaller"):
            rr = min(ratios) if policy == "not_larger" else max(ratios)
            ratios = [rr] * len(axes)
        for a, v in zip(axes, ratios):
            full[a] = v
        outs = [int(round(n * f)) if policy != "stretch" else n for n, f in zip(s, full)]
        if policy == "stretch":
            for a, v in zip(axes, vals):
                outs[a] = v
    else:
        raise _Unsupported("neither scales nor sizes is given")
    if r != 4 or full[0] != 1 or full[1] != 1:
        raise _Unsupported(f"scales {full} on a rank-{r} tensor (only the H and W of [N, C, H, W])")
    ints = []
    for n, f, o in zip(s[2:], full[2:], outs[2:]):
        if f < 1 or f != int(f) or o != n * int(f):
            raise _Unsupported(f"scale {f} (output {o} from {n}); only integer upsampling factors are supported")
        idx = _nearest_index(o, n, int(f), ctm, nm)
        if idx is None or not np.array_equal(idx, np.arange(o) // int(f)):
            raise _Unsupported(f"coordinate_transformation_mode={ctm!r} with nearest_mode={nm!r} does not "
                               f"replicate pixels for scale {int(f)}")
        ints.append(int(f))
    if ints == [1, 1]:
        return x
    c.need("upsample_nearest2d")
    return c.op("upsample_nearest2d", [x], {"scale": ints})


def h_slice(c: _Ctx):
    x = c.t(0, "data")
    s = list(x.shape)
    vals = [c.c(k) for k in range(1, len(c.node.inputs))] if c.opset >= 10 else []
    starts, ends, axes, steps = _slice_args(c.node, [None] + vals, len(s))
    y = x
    for st, en, ax, step in zip(starts, ends, axes, steps):
        if int(step) != 1:
            raise _Unsupported(f"steps={int(step)} (only 1)")
        sl = _slice_bounds(s[ax], st, en, 1)
        y = c.crop(y, ax, sl.start, max(0, sl.stop - sl.start))
    return y


_HANDLERS = {
    "Conv": h_conv, "ConvTranspose": h_conv_transpose, "MaxPool": h_maxpool, "AveragePool": h_avgpool,
    "GlobalAveragePool": h_global_avg, "GlobalMaxPool": h_global_max, "BatchNormalization": h_batchnorm,
    "Linear": h_linear, "Gemm": h_gemm, "MatMul": h_matmul, "Relu": _act("relu"),
    "LeakyRelu": _act("leaky_relu", negative_slope=("alpha", 0.01)), "Sigmoid": _act("sigmoid"),
    "Tanh": _act("tanh"), "Softmax": h_softmax, "Affine": h_affine, "Add": h_add, "Sum": h_sum,
    "Sub": h_sub, "Mul": h_mul_div, "Div": h_mul_div, "Concat": h_concat, "Flatten": h_flatten,
    "Reshape": h_reshape, "Squeeze": h_squeeze_unsqueeze, "Unsqueeze": h_squeeze_unsqueeze,
    "Identity": h_identity, "Dropout": h_dropout, "LRN": h_lrn, "Pad": h_pad, "Resize": h_resize,
    "Upsample": h_resize, "Slice": h_slice,
}
_NEEDS = {"ConvTranspose": ("conv_transpose2d",), "LRN": ("lrn",), "Concat": ("concat",),
          "Resize": ("upsample_nearest2d",), "Upsample": ("upsample_nearest2d",), "Slice": ("split",),
          "Pad": ("fill", "concat")}
_FOLDABLE = set(FOLDABLE_OPS)
assert set(SUPPORTED_OPS) <= set(_HANDLERS) | {"Constant"}


# ---------------------------------------------------------------------------------------------------
# the module


class OnnxModule(nn.Module):
    """An imported ONNX model. Parameters/buffers are the initializers (state_dict keys are the ONNX names
    with characters outside [A-Za-z0-9_.] replaced by '_'); forward(*inputs) replays the graph. compile()
    it like any module: `model.compile((8, 3, 32, 32))`. `input_names`, `output_names`, `input_shapes`
    (None for symbolic dims) and `opset` describe the source model."""

    def __init__(self, program: _Program):
        super().__init__()
        object.__setattr__(self, "_program", program)
        for key, arr, trainable in program.param_values:
            if trainable:
                self._parameters[key] = nn.Parameter(arr)
            else:
                self._buffers[key] = np.ascontiguousarray(arr, np.float32)
        program.param_values = []
        self.input_names = list(program.input_names)
        self.output_names = list(program.output_names)
        self.input_shapes = [tuple(d) if d is not None else None for _, d, _ in program.inputs]
        self.opset = program.opset

    @property
    def input_shape(self):
        """Declared shape of the first input (None for symbolic dims), or None."""
        return self.input_shapes[0] if self.input_shapes else None

    def example_input_shape(self, batch: int = 1):
        """The first input's declared shape with a symbolic batch replaced by `batch`."""
        s = self.input_shape
        if s is None or any(d is None for d in s[1:]):
            raise ValueError(f"the ONNX model does not declare a complete input shape ({s}); pass input_shape")
        return (batch if s[0] is None else s[0],) + tuple(s[1:])

    def forward(self, *xs):
        outs = self._program.run(list(xs))
        return outs[0] if len(outs) == 1 else tuple(outs)

    def extra_repr(self):
        return (f"inputs={self.input_names}, outputs={self.output_names}, nodes={len(self._program.nodes)}, "
                f"opset={self.opset}")


def import_model(src, bind=None, validate=True) -> OnnxModule:
    """ONNX model (path, bytes, file object or onnx.ModelProto) -> OnnxModule. `bind` maps graph input
    names to arrays treated as constants (the backend uses it for weights fed at run time). Raises
    UnsupportedError (a ValueError) listing every unsupported node at once."""
    model = load_model_proto(src)
    prog = _Program(model, bind)
    module = OnnxModule(prog)
    shapes = prog.dry_shapes() if validate else None
    if shapes is None:
        probs = prog.static_problems + prog.unknown_op_problems()
        if probs:
            raise UnsupportedError(probs)
        return module
    from ..graph import GraphBuilder
    b = GraphBuilder(False)
    with b:
        xs = [b.input(name, s) for name, s in zip(prog.input_names, shapes)]
        module(*xs)
    return module

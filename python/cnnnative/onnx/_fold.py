"""Constant folding of ONNX operators (FOLDABLE_OPS) with numpy: at import for nodes whose inputs are all
constants (shape arithmetic, weight preprocessing such as ConstantOfShape or Transpose of a weight), and while
tracing for Shape of a traced tensor and the arithmetic on it. These operators have no engine equivalent
(the engine has no integer tensors, Gather, Range, ...), so they belong to the ONNX mapper rather than to the
engine's compile pipeline. Every result's size is computed and checked against the folding budget
(check_budget) before it is allocated."""
from __future__ import annotations

import math

import numpy as np

from ._base import (Invalid, Unsupported, axes_arg, broadcast_shapes, check_budget, dtype_of, int_vector, norm_axis,
                    numel, reshape_target, scalar_value, slice_args, slice_bounds, squeezed_shape, unsqueezed_shape)
from ._common import require_onnx


def _np_dtype(onnx, to):
    dt = dtype_of(onnx, to)
    if dt is None:
        raise Invalid(f"to={to} is not a tensor data type")
    return dt


def fold_node(node, ins):
    """numpy value(s) of a node whose inputs are all constants (a traced tensor only for Shape)."""
    onnx = require_onnx()
    op, a = node.op, node.attrs
    if op in ("Identity", "Shape", "Size"):
        if not ins or ins[0] is None:
            raise Invalid("missing input")
    if op == "Identity":
        return [ins[0]]
    if op == "Shape":
        s = np.array(ins[0].shape, np.int64)
        r = len(s)
        start, end = int(a.get("start", 0)), int(a.get("end", r))
        start, end = (start + r if start < 0 else start), (end + r if end < 0 else end)
        return [s[min(max(0, start), r):min(max(0, end), r)]]
    if op == "Cast":
        x = np.asarray(ins[0])
        dt = _np_dtype(onnx, a.get("to", 0))
        check_budget(x.shape, dt.itemsize)
        if dt.kind == "O" or x.dtype.kind == "O":
            raise Unsupported("Cast from or to strings")
        with np.errstate(all="ignore"):
            return [x.astype(dt)]
    if op == "ConstantOfShape":
        shape = int_vector(ins[0], "shape")
        if any(d < 0 for d in shape):
            raise Invalid(f"shape {shape} has negative dimensions")
        v = a.get("value")
        v = np.zeros(1, np.float32) if v is None else np.asarray(v).reshape(-1)
        if v.size != 1:
            raise Invalid(f"value must hold one element, got {v.size}")
        check_budget(shape, v.dtype.itemsize)
        return [np.full(shape, v[0], v.dtype)]
    if op == "Gather":
        x, idx = np.asarray(ins[0]), np.asarray(ins[1])
        if x.ndim == 0:
            raise Invalid("Gather of a scalar")
        ax = norm_axis(a.get("axis", 0), x.ndim)
        if idx.dtype.kind not in "iu":
            raise Invalid(f"indices must be integers, got dtype {idx.dtype}")
        n = x.shape[ax]
        if idx.size and (int(idx.min()) < -n or int(idx.max()) >= n):
            raise Invalid(f"indices {idx.reshape(-1)[:8].tolist()} out of range for axis {ax} of size {n}")
        check_budget(list(x.shape[:ax]) + list(idx.shape) + list(x.shape[ax + 1:]), x.dtype.itemsize)
        return [np.take(x, idx.astype(np.int64), axis=ax)]
    if op == "Unsqueeze":
        x = np.asarray(ins[0])
        axes = axes_arg(node, ins, 1)
        if axes is None:
            raise Invalid("missing axes")
        return [x.reshape(unsqueezed_shape(x.shape, axes))]
    if op == "Squeeze":
        x = np.asarray(ins[0])
        return [x.reshape(squeezed_shape(x.shape, axes_arg(node, ins, 1)))]
    if op == "Concat":
        xs = [np.asarray(v) for v in ins if v is not None]
        if not xs:
            raise Invalid("no inputs")
        r = xs[0].ndim
        if "axis" not in a:
            raise Invalid("missing the required attribute axis")
        if r == 0:
            raise Invalid("Concat of scalars")
        ax = norm_axis(a["axis"], r)
        for v in xs[1:]:
            if v.ndim != r or any(d != e for i, (d, e) in enumerate(zip(v.shape, xs[0].shape)) if i != ax):
                raise Invalid(f"inputs of shapes {[list(v.shape) for v in xs]} differ outside axis {ax}")
        shape = list(xs[0].shape)
        shape[ax] = sum(v.shape[ax] for v in xs)
        check_budget(shape, max(v.dtype.itemsize for v in xs))
        return [np.concatenate(xs, axis=ax)]
    if op == "Reshape":
        x = np.asarray(ins[0])
        if len(ins) < 2 or ins[1] is None:
            raise Invalid("missing the shape input")
        return [x.reshape(reshape_target(x.shape, ins[1], a.get("allowzero", 0)))]
    if op == "Flatten":
        x = np.asarray(ins[0])
        ax = norm_axis(a.get("axis", 1), x.ndim, inclusive=True)
        return [x.reshape(numel(x.shape[:ax]), numel(x.shape[ax:]))]
    if op == "Transpose":
        x = np.asarray(ins[0])
        perm = a.get("perm")
        if perm is not None and sorted(int(p) for p in perm) != list(range(x.ndim)):
            raise Invalid(f"perm={list(perm)} is not a permutation of the {x.ndim} axes")
        return [np.ascontiguousarray(np.transpose(x, perm))]
    if op == "Slice":
        x = np.asarray(ins[0])
        starts, ends, axes, steps = slice_args(node, ins, x.ndim)
        sl = [slice(None)] * x.ndim
        for s, e, ax, st in zip(starts, ends, axes, steps):
            b = slice_bounds(x.shape[ax], s, e, st)
            sl[ax] = slice(b.start, None if b.stop < 0 else b.stop, b.step)  # a backward slice reaching index 0
        return [x[tuple(sl)]]
    if op == "Range":
        if len(ins) != 3 or any(v is None for v in ins):
            raise Invalid("Range takes start, limit and delta")
        start, limit, delta = (scalar_value(v, k) for v, k in zip(ins, ("start", "limit", "delta")))
        dt = np.asarray(ins[0]).dtype
        if dt.kind not in "iuf":
            raise Invalid(f"Range of dtype {dt}")
        vals = [float(v) for v in (start, limit, delta)]
        if not all(math.isfinite(v) for v in vals):
            raise Invalid(f"start, limit, delta = {vals}: not finite")
        if delta == 0:
            raise Invalid("delta is 0")
        if dt.kind in "iu":
            s_, l_, d_ = int(start), int(limit), int(delta)
            n = max(-((s_ - l_) // d_), 0)  # ceil((limit - start) / delta), exactly
        else:
            n = max(math.ceil((vals[1] - vals[0]) / vals[2]), 0)
        check_budget([n], dt.itemsize)
        if dt.kind in "iu":
            return [(np.arange(n, dtype=np.int64) * int(delta) + int(start)).astype(dt)]
        return [(start + np.arange(n, dtype=np.float64) * delta).astype(dt)]
    if op == "Expand":
        x = np.asarray(ins[0])
        shape = int_vector(ins[1], "shape")
        if any(d < 0 for d in shape):
            raise Invalid(f"shape {shape} has negative dimensions")
        out = broadcast_shapes(x.shape, shape)
        check_budget(out, x.dtype.itemsize)
        return [np.array(np.broadcast_to(x, out))]
    if op == "Where":
        if len(ins) != 3 or any(v is None for v in ins):
            raise Invalid("Where takes condition, X and Y")
        c, x, y = (np.asarray(v) for v in ins)
        if c.dtype != bool:
            raise Invalid(f"the condition must be bool, got dtype {c.dtype}")
        if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
            raise Unsupported(f"Where of dtypes {x.dtype} and {y.dtype}")
        out = broadcast_shapes(c.shape, x.shape, y.shape)
        check_budget(out, max(x.dtype.itemsize, y.dtype.itemsize))
        return [np.where(c, x, y)]
    if op in ("Add", "Sub", "Mul", "Div", "Equal", "Max", "Min"):
        xs = [np.asarray(v) for v in ins if v is not None]
        if len(xs) < (1 if op in ("Max", "Min") else 2):
            raise Invalid(f"{len(xs)} inputs")
        if any(v.dtype.kind not in "biuf" for v in xs):
            raise Unsupported(f"{op} of dtypes {[str(v.dtype) for v in xs]}")
        out = broadcast_shapes(*[v.shape for v in xs])
        check_budget(out, 8)
        x, y = xs[0], xs[-1]
        with np.errstate(all="ignore"):
            if op == "Div" and x.dtype.kind in "iu" and y.dtype.kind in "iu":
                if np.any(y == 0):
                    raise Invalid("integer division by zero")
                return [np.trunc(x / y).astype(np.result_type(x, y))]
            if op in ("Max", "Min"):
                f = np.maximum if op == "Max" else np.minimum
                res = xs[0]
                for v in xs[1:]:
                    res = f(res, v)
                return [np.asarray(res)]
            f = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Equal": np.equal}[op]
            return [np.asarray(f(x, y)).astype(np.result_type(x, y) if op != "Equal" else bool)]
    if op in ("Neg", "Sqrt", "Reciprocal", "Floor", "Ceil"):
        f = {"Neg": np.negative, "Sqrt": np.sqrt, "Reciprocal": np.reciprocal, "Floor": np.floor,
             "Ceil": np.ceil}[op]
        x = np.asarray(ins[0])
        if x.dtype.kind != "f" and not (op == "Neg" and x.dtype.kind == "i"):
            raise Invalid(f"{op} of dtype {x.dtype}")
        with np.errstate(all="ignore"):
            return [np.asarray(f(x)).astype(x.dtype)]
    if op in ("ReduceProd", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceMean"):
        x = np.asarray(ins[0])
        if x.dtype.kind not in "iuf":
            raise Unsupported(f"{op} of dtype {x.dtype}")
        axes = axes_arg(node, ins, 1)
        if axes is not None and not axes and int(a.get("noop_with_empty_axes", 0)):
            return [x]
        axes = tuple(range(x.ndim)) if not axes else tuple(sorted({norm_axis(v, x.ndim, "axes") for v in axes}))
        if x.ndim == 0:
            return [x]
        if x.size == 0 and op in ("ReduceMax", "ReduceMin", "ReduceMean"):
            raise Unsupported(f"{op} of an empty tensor")
        f = {"ReduceProd": np.prod, "ReduceSum": np.sum, "ReduceMax": np.max, "ReduceMin": np.min,
             "ReduceMean": np.mean}[op]
        with np.errstate(all="ignore"):
            return [np.asarray(f(x, axis=axes, keepdims=bool(int(a.get("keepdims", 1))))).astype(x.dtype)]
    if op in ("Less", "Greater", "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "Mod"):
        x, y = (np.asarray(v) for v in ins[:2])
        if x.dtype.kind not in "biuf" or y.dtype.kind not in "biuf":
            raise Unsupported(f"{op} of dtypes {x.dtype} and {y.dtype}")
        check_budget(broadcast_shapes(x.shape, y.shape), 8)
        if op in ("And", "Or", "Xor"):
            if x.dtype != bool or y.dtype != bool:
                raise Invalid(f"{op} takes bool tensors, got {x.dtype} and {y.dtype}")
            return [{"And": np.logical_and, "Or": np.logical_or, "Xor": np.logical_xor}[op](x, y)]
        if op == "Mod":
            if x.dtype.kind in "iu" and y.dtype.kind in "iu" and np.any(y == 0):
                raise Invalid("integer modulo by zero")
            with np.errstate(all="ignore"):
                r = np.fmod(x, y) if int(a.get("fmod", 0)) else np.mod(x, y)
            return [np.asarray(r).astype(np.result_type(x, y))]
        f = {"Less": np.less, "Greater": np.greater, "LessOrEqual": np.less_equal,
             "GreaterOrEqual": np.greater_equal}[op]
        return [np.asarray(f(x, y))]
    if op in ("Not", "Abs", "Sign"):
        x = np.asarray(ins[0])
        if op == "Not":
            if x.dtype != bool:
                raise Invalid(f"Not of dtype {x.dtype}")
            return [np.logical_not(x)]
        if x.dtype.kind not in "iuf":
            raise Invalid(f"{op} of dtype {x.dtype}")
        return [np.asarray(np.abs(x) if op == "Abs" else np.sign(x)).astype(x.dtype)]
    if op == "Size":
        return [np.array(numel(ins[0].shape), np.int64)]
    if op in ("QuantizeLinear", "DequantizeLinear"):  # QDQ weights and biases (onnx/_ops_quant.py)
        from ._ops_quant import fold_qdq
        return [fold_qdq(op, a, ins)]
    raise Unsupported(f"no constant folding for {op}")

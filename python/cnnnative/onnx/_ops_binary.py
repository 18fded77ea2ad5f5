"""ONNX import/export of the binary op family (registered in _registry).

Import: map_binary maps Add / Sub / Mul / Div with NumPy (multidirectional) broadcasting: two computed tensors
(binary_add/sub/mul/div; same-shaped Add stays the engine's `add`, which the inference fusion matches), or a
computed tensor and a constant: a constant whose values are all equal becomes one `binary_scalar` node (its value
an attribute; a `fill` of its shape when it broadcasts the result larger), any other float constant must be a
model weight (the importer keeps it as a buffer, saved with the model), read as a tensor. map_sum: Sum of
broadcasting tensors. The importer's own Add/Sub/Mul/Div handlers (_ops_math) own those ONNX types; they delegate
here for the cases they do not fold into affines (see map_binary).

Export: binary_add/sub/mul/div -> Add/Sub/Mul/Div; binary_scalar -> Add/Sub/Mul/Div with a scalar initializer
(the reversed kinds put it first); sum_to -> ReduceSum over the broadcast axes (keepdims, axes as an input:
opset 13+), a Reshape when the target has a lower rank, and a Mul by the scale when it is not 1."""
from __future__ import annotations

import numpy as np

from ..graph import Tensor
from ._base import Invalid, Unsupported, broadcast_shapes
from ._emit import NodeContext
from ._registry import exports, imports

_OPS = {"Add": "binary_add", "Sub": "binary_sub", "Mul": "binary_mul", "Div": "binary_div"}
# binary_scalar kinds: tensor op constant, constant op tensor
_KIND = {"Add": (0, 0), "Sub": (1, 2), "Mul": (3, 3), "Div": (4, 5)}


def _value(ctx: NodeContext, k):
    """Input k as a Tensor (computed, or a weight the importer holds) or a numpy constant."""
    v = ctx.vals[k] if k < len(ctx.vals) else None
    if isinstance(v, Tensor):
        return v
    name = ctx.node.inputs[k] if k < len(ctx.node.inputs) else ""
    t = ctx.trace.tensor(name) if name else None
    if t is not None:
        return t
    if v is None:
        raise Unsupported(f"missing input {k}")
    return np.asarray(v)


def _binary(ctx: NodeContext, op_type, a, b):
    """a <op_type> b for Tensors / numpy constants a, b (at least one Tensor)."""
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        broadcast_shapes(a.shape, b.shape)  # Invalid when they do not broadcast
        if op_type == "Add" and a.shape == b.shape:
            return ctx.op("add", [a, b])
        ctx.need(_OPS[op_type])
        return ctx.op(_OPS[op_type], [a, b])
    rev = not isinstance(a, Tensor)
    t, c = (b, a) if rev else (a, b)
    if c.dtype.kind != "f":
        raise Unsupported(f"{op_type} with a constant of dtype {c.dtype} {list(c.shape)} (float constants only)")
    if c.size == 0:
        raise Unsupported(f"{op_type} with an empty constant {list(c.shape)}")
    out = broadcast_shapes(t.shape, c.shape)
    flat = c.reshape(-1)
    if not np.all(flat == flat[0]):
        raise Unsupported(f"{op_type} with a constant {list(c.shape)} of different values that is not a model "
                          "weight (the importer keeps such constants as buffers)")
    v = float(flat[0])
    if list(out) != list(t.shape):
        ctx.need("fill", _OPS[op_type])
        f = ctx.op("fill", [], {"shape": [int(d) for d in c.shape], "value": v})
        return ctx.op(_OPS[op_type], [f, t] if rev else [t, f])
    ctx.need("binary_scalar")
    return ctx.op("binary_scalar", [t], {"kind": _KIND[op_type][1 if rev else 0], "value": v})


def map_binary(ctx: NodeContext):
    """Add / Sub / Mul / Div (opset 7+ broadcasting; the legacy broadcast=1/axis form is made explicit by the
    importer's rewrites). Raises Unsupported for a non-float or empty constant, and for a constant of different
    values that the importer did not keep as a weight."""
    op_type = ctx.node.op  # not onnx_op: the importer rewrites Sub(a, b) as Add(a, -b) keeping onnx_op "Sub"
    if op_type not in _OPS:
        raise Unsupported(f"map_binary cannot map {ctx.node.op}")
    if len(ctx.node.inputs) != 2:
        raise Invalid(f"{op_type} takes 2 inputs, got {len(ctx.node.inputs)}")
    a, b = _value(ctx, 0), _value(ctx, 1)
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise Unsupported(f"{op_type} of two constants that were not folded")
    for v in (a, b):
        if isinstance(v, Tensor) and not v.dtype.startswith("float"):
            raise Unsupported(f"{op_type} of a {v.dtype} tensor (float tensors only)")
    return _binary(ctx, op_type, a, b)


def map_sum(ctx: NodeContext):
    """Sum of one or more tensors with broadcasting (a constant operand as in map_binary)."""
    vals = [_value(ctx, k) for k in range(len(ctx.node.inputs))]
    if not vals:
        raise Invalid("Sum takes at least one input")
    ts = [v for v in vals if isinstance(v, Tensor)]
    if not ts:
        raise Unsupported("Sum of constants that were not folded")
    first = next(k for k, v in enumerate(vals) if isinstance(v, Tensor))
    y = vals[first]
    for k, v in enumerate(vals):
        if k != first:  # by position: Sum(u, u, u) is 3u
            y = _binary(ctx, "Add", y, v)
    if len(vals) == 1:
        y = ctx.op("binary_scalar", [y], {"kind": 0, "value": 0.0})  # Sum of one input: a copy
    return y


def map_affine_broadcast(ctx: NodeContext):
    """The importer's AFFINE node (y = x * scale + shift from Add/Sub/Mul/Div by a constant) in the cases the
    per-channel affine cannot take: scale and shift each of one value, broadcasting the tensor larger or of a
    higher rank (binary_scalar, or a fill of the constant's shape and binary_mul / binary_add). Other constants:
    Unsupported with the affine's reason."""
    x = ctx.tensor(0, "X")
    a = ctx.node.attrs
    parts = []
    for what in ("scale", "shift"):
        v = a.get(what)
        if v is None:
            parts.append(None)
            continue
        c = np.asarray(v, np.float64)
        flat = c.reshape(-1)
        if c.size == 0 or not np.all(flat == flat[0]):
            raise Unsupported(a.get("problem") or f"the constant {what} {list(c.shape)} varies; it must be a model "
                              "weight to broadcast (the importer keeps such constants as buffers)")
        parts.append(c)
    y = x
    for c, op_type in zip(parts, ("Mul", "Add")):
        if c is not None:
            y = _binary(ctx, op_type, y, c.astype(np.float32))
    if y is x:
        y = ctx.op("binary_scalar", [x], {"kind": 3, "value": 1.0})
    return y


@imports("Reciprocal", engine_ops=("binary_scalar",))
def map_reciprocal(ctx: NodeContext):
    """Reciprocal(X) = 1 / X of a computed tensor (constants are folded at import)."""
    return ctx.op("binary_scalar", [ctx.tensor(0, "X")], {"kind": 5, "value": 1.0})


@imports("Neg", engine_ops=("binary_scalar",))
def map_neg(ctx: NodeContext):
    """Neg(X) = -X of a computed tensor."""
    return ctx.op("binary_scalar", [ctx.tensor(0, "X")], {"kind": 3, "value": -1.0})


# ---- export ----

def _export_as(onnx_op):
    def fn(ex, ins, attrs, outs, name, I, O):
        ex.node(onnx_op, I, O, name)
    return fn


for _onnx_op, _op in _OPS.items():
    exports(_op)(_export_as(_onnx_op))

_SCALAR_EXPORT = {0: ("Add", False), 1: ("Sub", False), 2: ("Sub", True), 3: ("Mul", False), 4: ("Div", False),
                  5: ("Div", True)}


def _first(v):
    return v[0] if isinstance(v, (list, tuple)) else v


@exports("binary_scalar")
def export_binary_scalar(ex, ins, attrs, outs, name, I, O):
    kind = int(_first(attrs.get("kind", 0)))
    if kind not in _SCALAR_EXPORT:
        return ex.problems.append((name, "binary_scalar", f"kind={kind} (0 to 5)"))
    op, rev = _SCALAR_EXPORT[kind]
    c = ex.const(f"{name}.value", np.array(float(attrs.get("value", 0.0)), np.float32))
    ex.node(op, [c, I[0]] if rev else [I[0], c], O, name)


def _fresh(ex, hint):
    n, k = hint, 1
    while n in ex.taken:
        n, k = f"{hint}_{k}", k + 1
    ex.taken.add(n)
    return n


@exports("sum_to")
def export_sum_to(ex, ins, attrs, outs, name, I, O):
    xs = ex.shape(ins[0])
    target = [int(d) for d in attrs["shape"]]
    full = [1] * (len(xs) - len(target)) + target
    axes = [i for i, (d, t) in enumerate(zip(xs, full)) if t == 1 and d != 1]
    scale = float(attrs.get("scale", 1.0))
    reshape = len(target) != len(xs)
    cur = I[0]
    steps = [s for s in ("reduce", "reshape" if reshape else None, "scale" if scale != 1.0 else None) if s]
    for k, step in enumerate(steps):
        out = O[0] if k == len(steps) - 1 else _fresh(ex, f"{name}:{step}")
        nm = name if k == 0 else f"{name}:{step}"
        if step == "reduce":
            if axes:
                ax = ex.const(f"{name}.axes", np.array(axes, np.int64))
                ex.node("ReduceSum", [cur, ax], [out], nm, keepdims=1)
            else:
                ex.node("Identity", [cur], [out], nm)
        elif step == "reshape":
            shp = ex.const(f"{name}.shape", np.array(target, np.int64))
            ex.node("Reshape", [cur, shp], [out], nm)
        else:
            c = ex.const(f"{name}.scale", np.array(scale, np.float32))
            ex.node("Mul", [cur, c], [out], nm)
        cur = out
    if 0 in axes or reshape:
        ex.batch_specific.append(name)

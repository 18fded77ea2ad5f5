"""ONNX import/export of the act op family (registered in _registry).

Import: Clip (min/max attributes before opset 11, optional constant inputs from 11 on; min > max gives max),
HardSigmoid (alpha, beta: PyTorch's Hardsigmoid exports alpha = 1/6), HardSwish, Gelu (opset 20, approximate
'none' / 'tanh'), Erf (on its own: the x * 0.5 * (1 + Erf(x / sqrt(2))) GELU that older exporters write then
imports as its parts), Mish, Elu, Softplus (ONNX's has no threshold; the engine's 20 differs from it by less than
float32 resolves), PRelu (slope [C, 1, 1], [1, C, 1, 1], [C], [1] or a scalar: one slope per channel or one shared).
Export (opset 17, _exporter.OPSET): clip -> Clip (bounds as inputs), hardsigmoid -> HardSigmoid, hardswish ->
HardSwish, elu -> Elu, erf -> Erf, softplus -> Softplus (beta != 1 as Mul / Softplus / Mul), prelu -> PRelu (the
slope reshaped to [C, 1, ...]); the ops opset 17 lacks are written as their definitions: silu -> Sigmoid * x,
gelu -> x * 0.5 * (1 + Erf(x / sqrt(2))) or its tanh form, mish -> x * Tanh(Softplus(x)) (as PyTorch's
TorchScript exporter writes them)."""
from __future__ import annotations

import math

import numpy as np

from ._base import Invalid, Node, Unsupported, scalar_value
from ._emit import NodeContext
from ._registry import exports, imports

_FLT_MAX = float(np.finfo(np.float32).max)


def _float_attr(ctx: NodeContext, name, default):
    v = ctx.attr(name, default)
    try:
        v = float(v)
    except (TypeError, ValueError):
        raise Invalid(f"attribute {name}={v!r} must be a float") from None
    if math.isnan(v):
        raise Invalid(f"attribute {name} is NaN")
    return v


def _unary(op, **attrs):
    """Mapper of an ONNX activation to engine op `op`; attrs: engine attribute -> (ONNX attribute, default)."""
    def mapper(ctx: NodeContext):
        extra = {k: _float_attr(ctx, k2, d) for k, (k2, d) in attrs.items()}
        return ctx.op(op, [ctx.tensor(0, "X")], extra)
    return mapper


@imports("Clip", engine_ops=("clip",))
def map_clip(ctx: NodeContext):
    x = ctx.tensor(0, "input")
    if ctx.opset < 11:
        lo, hi = _float_attr(ctx, "min", -_FLT_MAX), _float_attr(ctx, "max", _FLT_MAX)
    else:
        bounds = []
        for k, what in ((1, "min"), (2, "max")):
            v = ctx.constant(k, what)
            if v is None:
                bounds.append(None)
                continue
            if v.dtype.kind != "f":
                raise Unsupported(f"{what} of dtype {v.dtype} (float tensors only)")
            b = float(scalar_value(v, what))
            if math.isnan(b):
                raise Invalid(f"{what} is NaN")
            bounds.append(b)
        lo, hi = bounds
    attrs = {}
    if lo is not None and lo > -math.inf:
        attrs["min"] = lo
    if hi is not None and hi < math.inf:
        attrs["max"] = hi
    return ctx.op("clip", [x], attrs)


imports("HardSigmoid", engine_ops=("hardsigmoid",))(_unary("hardsigmoid", alpha=("alpha", 0.2), beta=("beta", 0.5)))
imports("HardSwish", engine_ops=("hardswish",))(_unary("hardswish"))
imports("Erf", engine_ops=("erf",))(_unary("erf"))
imports("Mish", engine_ops=("mish",))(_unary("mish"))
imports("Elu", engine_ops=("elu",))(_unary("elu", alpha=("alpha", 1.0)))


@imports("Softplus", engine_ops=("softplus",))
def map_softplus(ctx: NodeContext):
    # beta / threshold: set by fuse_patterns on PyTorch's thresholded softplus; ONNX's own has neither
    beta, thr = float(ctx.attr("beta", 1.0)), float(ctx.attr("threshold", 20.0))
    return ctx.op("softplus", [ctx.tensor(0, "X")], {"beta": beta, "threshold": thr})


@imports("Gelu", engine_ops=("gelu",))
def map_gelu(ctx: NodeContext):
    ap = ctx.attr("approximate", "none")
    if isinstance(ap, bytes):
        ap = ap.decode("utf-8", "replace")
    if ap not in ("none", "tanh"):
        raise Invalid(f"approximate={ap!r} must be 'none' or 'tanh'")
    return ctx.op("gelu", [ctx.tensor(0, "X")], {"approximate": int(ap == "tanh")})


@imports("PRelu", engine_ops=("prelu",))
def map_prelu(ctx: NodeContext):
    x = ctx.tensor(0, "X")
    s = list(x.shape)
    c = s[1] if len(s) >= 2 else 1
    if not ctx.has(1):
        raise Invalid("missing slope")
    v = ctx.vals[1] if len(ctx.vals) > 1 else None
    if v is None:
        v = ctx.tensor(1, "slope")  # a weight the module holds
    sshape = [int(d) for d in v.shape]
    # the slope broadcasts unidirectionally to X (aligned at the end): only axis 1 of X may vary
    if len(sshape) > len(s):
        raise Invalid(f"slope {sshape} has a higher rank than X {s}")
    padded = [1] * (len(s) - len(sshape)) + sshape
    n = int(np.prod(sshape)) if sshape else 1
    if any(d != 1 for i, d in enumerate(padded) if i != 1) or n not in (1, c):
        raise Unsupported(f"slope {sshape} for X {s}: only one slope per channel (axis 1, e.g. [{c}, 1, 1]) or one "
                          "shared slope are supported")
    if isinstance(v, np.ndarray) and n == 1:
        if v.dtype.kind != "f":
            raise Unsupported(f"slope of dtype {v.dtype} (float only)")
        w = ctx.op("fill", [], {"shape": [1], "value": float(v.reshape(-1)[0])})
    else:
        try:
            w = ctx.tensor(1, "slope")
        except Unsupported:
            raise Unsupported(f"slope {sshape} is a per-channel constant that the importer does not hold as a "
                              "weight") from None
        w = ctx.reshape(w, [n])
    return ctx.op("prelu", [x, w])


# ---------------------------------------------------------------------------------------------------
# export (opset 17)

def _first(v, default=None):
    if v is None:
        return default
    return v[0] if isinstance(v, (list, tuple)) else v


def _tmp(ex, base):
    """A fresh value name for an intermediate of a decomposition."""
    n, k = base, 1
    while n in ex.taken:
        n, k = f"{base}_{k}", k + 1
    ex.taken.add(n)
    return n


def _scalar(ex, name, v):
    return ex.const(name, np.array(v, np.float32))


@exports("clip")
def export_clip(ex, ins, attrs, outs, name, I, O):
    lo, hi = attrs.get("min"), attrs.get("max")
    lo_n = _scalar(ex, f"{name}.min", float(lo)) if lo is not None and float(lo) > -math.inf else ""
    hi_n = _scalar(ex, f"{name}.max", float(hi)) if hi is not None and float(hi) < math.inf else ""
    args = [I[0], lo_n, hi_n]
    while args[-1] == "":
        args.pop()
    ex.node("Clip", args, O, name)


@exports("hardsigmoid")
def export_hardsigmoid(ex, ins, attrs, outs, name, I, O):
    ex.node("HardSigmoid", I, O, name, alpha=float(attrs.get("alpha", 1.0 / 6.0)), beta=float(attrs.get("beta", 0.5)))


@exports("hardswish")
def export_hardswish(ex, ins, attrs, outs, name, I, O):
    ex.node("HardSwish", I, O, name)


@exports("erf")
def export_erf(ex, ins, attrs, outs, name, I, O):
    ex.node("Erf", I, O, name)


@exports("elu")
def export_elu(ex, ins, attrs, outs, name, I, O):
    ex.node("Elu", I, O, name, alpha=float(attrs.get("alpha", 1.0)))


@exports("silu")
def export_silu(ex, ins, attrs, outs, name, I, O):
    s = _tmp(ex, f"{name}.sigmoid")
    ex.node("Sigmoid", I, [s], f"{name}.sigmoid")
    ex.node("Mul", [I[0], s], O, name)


@exports("mish")
def export_mish(ex, ins, attrs, outs, name, I, O):
    sp, t = _tmp(ex, f"{name}.softplus"), _tmp(ex, f"{name}.tanh")
    ex.node("Softplus", I, [sp], f"{name}.softplus")
    ex.node("Tanh", [sp], [t], f"{name}.tanh")
    ex.node("Mul", [I[0], t], O, name)


@exports("gelu")
def export_gelu(ex, ins, attrs, outs, name, I, O):
    x = I[0]
    if int(_first(attrs.get("approximate"), 0)) == 1:
        # 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))
        x2, x3, inner, inner2, t, t1, h = (_tmp(ex, f"{name}.{s}") for s in
                                           ("x2", "x3", "inner", "scaled", "tanh", "plus1", "half"))
        ex.node("Mul", [x, x], [x2], f"{name}.x2")
        ex.node("Mul", [x2, x], [x3], f"{name}.x3")
        c3 = _scalar(ex, f"{name}.c3", 0.044715)
        x3c = _tmp(ex, f"{name}.x3c")
        ex.node("Mul", [x3, c3], [x3c], f"{name}.x3c")
        ex.node("Add", [x, x3c], [inner], f"{name}.inner")
        ex.node("Mul", [inner, _scalar(ex, f"{name}.k", math.sqrt(2.0 / math.pi))], [inner2], f"{name}.scaled")
        ex.node("Tanh", [inner2], [t], f"{name}.tanh")
    else:
        # 0.5 * x * (1 + erf(x / sqrt(2)))
        xs, t, t1, h = (_tmp(ex, f"{name}.{s}") for s in ("div", "erf", "plus1", "half"))
        ex.node("Div", [x, _scalar(ex, f"{name}.sqrt2", math.sqrt(2.0))], [xs], f"{name}.div")
        ex.node("Erf", [xs], [t], f"{name}.erf")
    ex.node("Add", [t, _scalar(ex, f"{name}.one", 1.0)], [t1], f"{name}.plus1")
    ex.node("Mul", [x, t1], [h], f"{name}.mul")
    ex.node("Mul", [h, _scalar(ex, f"{name}.half", 0.5)], O, name)


@exports("softplus")
def export_softplus(ex, ins, attrs, outs, name, I, O):
    beta = float(attrs.get("beta", 1.0))
    thr = float(attrs.get("threshold", 20.0))
    # ONNX's Softplus has no threshold: PyTorch's differs from it by log1p(exp(-threshold)) / beta above it, below
    # float32's resolution of x there when threshold >= 20
    if not thr >= 20.0:
        return ex.problems.append((name, "softplus", f"threshold={thr} (< 20) has no ONNX equivalent"))
    if beta == 1.0:
        return ex.node("Softplus", I, O, name)
    bx, sp = _tmp(ex, f"{name}.beta_x"), _tmp(ex, f"{name}.softplus")
    ex.node("Mul", [I[0], _scalar(ex, f"{name}.beta", beta)], [bx], f"{name}.beta_x")
    ex.node("Softplus", [bx], [sp], f"{name}.softplus")
    ex.node("Mul", [sp, _scalar(ex, f"{name}.inv_beta", 1.0 / beta)], O, name)


@exports("prelu")
def export_prelu(ex, ins, attrs, outs, name, I, O):
    xs, ws = ex.shape(ins[0]), ex.shape(ins[1])
    slope = I[1]
    if ws[0] != 1 and len(xs) > 2:  # one slope per channel: [C, 1, ...] broadcasts along axis 1
        slope = _tmp(ex, f"{name}.slope")
        shp = ex.const(f"{name}.slope_shape", np.array([ws[0]] + [1] * (len(xs) - 2), np.int64))
        ex.node("Reshape", [I[1], shp], [slope], f"{name}.slope")
    ex.node("PRelu", [I[0], slope], O, name)


# ---------------------------------------------------------------------------------------------------
# ONNX-level patterns (to run on the Program before _rewrite.canonicalize turns constant Mul/Div/Add into
# affines): the activations exporters spell as several nodes become one engine op.

def _const_scalar(prog, name):
    if name not in prog.consts:
        return None
    v = np.asarray(prog.consts[name])
    if v.dtype.kind != "f" or v.size != 1:
        return None
    return float(v.reshape(-1)[0])


def _binary_with_const(prog, n, op, value=None, tol=1e-6):
    """(tensor input, constant) of node n = op(tensor, scalar constant) (either order for Mul / Add), or None;
    with value: only when the constant equals it (relative tol)."""
    if n is None or n.op != op or len(n.inputs) != 2:
        return None
    for k in ((1, 0) if op in ("Mul", "Add") else (1,)):
        c = _const_scalar(prog, n.inputs[k])
        if c is not None and n.inputs[1 - k] not in prog.consts:
            if value is not None and not abs(c - value) <= tol * abs(value):
                continue
            return n.inputs[1 - k], c
    return None


def fuse_patterns(prog):
    """Rewrites prog.nodes in place:
    - GELU as exporters before opset 20 write it, x * 0.5 * (1 + Erf(x / sqrt(2))) (Div by sqrt(2) or Mul by
      1/sqrt(2); the halving before or after the product) -> one Gelu node (approximate 'none');
    - PyTorch's softplus with its threshold, as the dynamo exporter writes it, Where(Greater(b * x, t), x,
      Softplus(b * x) / b) (b = 1: no Mul / Div) -> one Softplus node carrying beta and threshold.
    Only when every intermediate value has no other reader and is no graph output. Returns the number of
    patterns fused."""
    uses = prog.uses()
    prod = prog.producers()
    outputs = set(prog.output_names)
    dead, new_at = set(), {}  # ids of removed nodes; id(last node of a pattern) -> replacement

    def single(v):
        return uses[v] == 1 and v not in outputs

    for n in prog.nodes:
        if n.op == "Erf" and len(n.inputs) == 1:
            a = prod.get(n.inputs[0])
            xa = _binary_with_const(prog, a, "Div", math.sqrt(2.0), 1e-4) or \
                _binary_with_const(prog, a, "Mul", 1 / math.sqrt(2.0), 1e-4)
            if xa is None or not single(n.inputs[0]) or not single(n.outputs[0]):
                continue
            x = xa[0]
            readers = [m for m in prog.nodes if n.outputs[0] in m.inputs]
            add = readers[0]
            if _binary_with_const(prog, add, "Add", 1.0) is None or not single(add.outputs[0]):
                continue
            p = add.outputs[0]
            m1 = next(m for m in prog.nodes if p in m.inputs)
            if m1.op != "Mul" or len(m1.inputs) != 2:
                continue
            other = m1.inputs[1] if m1.inputs[0] == p else m1.inputs[0]
            if other == x:  # (x * p) * 0.5
                if not single(m1.outputs[0]):
                    continue
                last = next((m for m in prog.nodes if m1.outputs[0] in m.inputs), None)
                if _binary_with_const(prog, last, "Mul", 0.5) is None:
                    continue
                chain = [a, n, add, m1, last]
            else:  # (x * 0.5) * p
                half = prod.get(other)
                hx = _binary_with_const(prog, half, "Mul", 0.5)
                if hx is None or hx[0] != x or not single(other):
                    continue
                last = m1
                chain = [a, n, add, half, m1]
            dead.update(id(c) for c in chain)
            new_at[id(last)] = Node("Gelu", last.name, [x], list(last.outputs), {"approximate": "none"}, "Gelu")
        elif n.op == "Where" and len(n.inputs) == 3:
            g = prod.get(n.inputs[0])
            gt = _binary_with_const(prog, g, "Greater")
            if gt is None or not single(n.inputs[0]):
                continue
            bx, thr = gt
            x = n.inputs[1]
            sp_out = n.inputs[2]
            beta, chain = 1.0, [g, n]
            if bx != x:
                mb = _binary_with_const(prog, prod.get(bx), "Mul")
                if mb is None or mb[0] != x or uses[bx] != 2 or bx in outputs:
                    continue
                beta = mb[1]
                d = _binary_with_const(prog, prod.get(sp_out), "Div", beta)
                if d is None or not single(sp_out) or beta <= 0:
                    continue
                s = prod.get(d[0])
                chain += [prod[bx], prod[sp_out]]
                if not single(d[0]):
                    continue
            else:
                s = prod.get(sp_out)
                if not single(sp_out):
                    continue
            if s is None or s.op != "Softplus" or s.inputs[0] != bx:
                continue
            chain.append(s)
            dead.update(id(c) for c in chain)
            new_at[id(n)] = Node("Softplus", n.name, [x], list(n.outputs), {"beta": beta, "threshold": thr},
                                 "Softplus")
    if not new_at:
        return 0
    prog.nodes = [new_at.get(id(n), n) for n in prog.nodes if id(n) in new_at or id(n) not in dead]
    return len(new_at)

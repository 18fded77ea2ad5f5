"""ONNX import/export of the shape op family (registered in _registry).

Import: Transpose of activations (on constants it is folded before any mapper runs), Split (sizes from the
`split` attribute (opset < 13) or input (13+), or `num_outputs` (18+), else equal pieces), and the mappers the
importer's built-in Slice, Pad and MatMul mappers delegate to for what they refuse: map_slice_general (any
steps, negative ones included, negative and clamped indices: one engine `slice`), map_pad_general (modes
reflect and edge on any axes, and constant mode on any rank: one engine `pad_nd`), map_matmul_general (MatMul of
two computed tensors or of a tensor and a constant of any rank, with batch broadcasting and 1-D operands: one
engine `matmul`).
Export: transpose -> Transpose, slice -> Slice (with steps), pad_nd -> Pad (constant / reflect / edge),
matmul -> MatMul (Transpose nodes first for trans_a / trans_b)."""
from __future__ import annotations

import numpy as np

from ._base import Invalid, Unsupported, int_vector, norm_axis, slice_args, slice_bounds
from ._emit import NodeContext
from ._registry import exports, imports

_PAD_MODES = {"constant": 0, "reflect": 1, "edge": 2}
_ONNX_PAD_MODE = {0: "constant", 1: "reflect", 2: "edge"}


# ---- import ----

@imports("Transpose", engine_ops=("transpose",))
def map_transpose(ctx: NodeContext):
    x = ctx.tensor(0, "data")
    r = len(x.shape)
    perm = ctx.attr("perm")
    perm = list(range(r))[::-1] if perm is None else [int(p) for p in perm]
    if sorted(perm) != list(range(r)):
        raise Invalid(f"perm {perm} is not a permutation of the {r} axes of {list(x.shape)}")
    if perm == list(range(r)):
        return x
    if r > 6:
        raise Unsupported(f"a rank-{r} tensor (rank <= 6)")
    ctx.need("transpose")
    return ctx.op("transpose", [x], {"perm": perm})


@imports("Split", engine_ops=("split",))
def map_split(ctx: NodeContext):
    x = ctx.tensor(0, "input")
    s = list(x.shape)
    axis = norm_axis(ctx.attr("axis", 0), len(s))
    n_out = len(ctx.node.outputs)
    sizes = None
    if ctx.opset >= 13 and ctx.has(1):
        sizes = int_vector(ctx.constant(1, "split"), "split")
    elif ctx.opset < 13 and ctx.attr("split") is not None:
        sizes = [int(v) for v in ctx.attr("split")]
    if sizes is None:
        k = int(ctx.attr("num_outputs", n_out)) if ctx.opset >= 18 else n_out
        if ctx.opset >= 18 and ctx.attr("num_outputs") is not None and k != n_out:
            raise Invalid(f"num_outputs={k} but the node has {n_out} outputs")
        if k < 1:
            raise Invalid("no outputs")
        size = -(-s[axis] // k)  # ceil: the last piece smaller (opset 18), equal pieces before
        if ctx.opset < 18 and s[axis] % k:
            raise Invalid(f"{s[axis]} elements along axis {axis} do not split into {k} equal pieces")
        sizes = [size] * (k - 1) + [s[axis] - size * (k - 1)]
    if len(sizes) != n_out:
        raise Invalid(f"split {sizes} gives {len(sizes)} pieces for {n_out} outputs")
    if any(v < 0 for v in sizes) or sum(sizes) != s[axis]:
        raise Invalid(f"split {sizes} must be >= 0 and sum to {s[axis]}, the size of axis {axis} of {s}")
    if any(v == 0 for v in sizes):
        raise Unsupported(f"split {sizes} has an empty piece (the engine has no zero-size tensors)")
    if len(sizes) == 1:
        return [x]
    if not ctx.builder.training:
        ctx.need("split")
        return ctx.op("split", [x], {"axis": axis, "sizes": sizes}, n_out=True)
    ctx.need("slice")  # training: the engine's split has no gradient rule, slices have one each
    outs, start, r = [], 0, len(s)
    for v in sizes:
        starts, sz = [0] * r, list(s)
        starts[axis], sz[axis] = start, v
        outs.append(ctx.op("slice", [x], {"starts": starts, "steps": [1] * r, "sizes": sz}))
        start += v
    return outs


def map_slice_general(ctx: NodeContext):
    """ONNX Slice of a computed tensor with any steps (negative: backwards), negative and out-of-range
    starts/ends clamped as the specification says: one engine `slice` of every axis."""
    x = ctx.tensor(0, "data")
    s = list(x.shape)
    r = len(s)
    vals = [ctx.constant(k) for k in range(1, len(ctx.node.inputs))] if ctx.opset >= 10 else []
    starts, ends, axes, steps = slice_args(ctx.node, [None] + vals, r)
    st, sp, sz = [0] * r, [1] * r, list(s)
    for a, b, ax, step in zip(starts, ends, axes, steps):
        sl = slice_bounds(s[ax], a, b, step)  # already clamped: a stop of -1 or None is "before index 0"
        rng = range(sl.start, -1 if sl.stop is None else sl.stop, sl.step)
        if len(rng) == 0:
            raise Unsupported(f"the result would be empty along axis {ax} (the engine has no zero-size tensors)")
        st[ax], sp[ax], sz[ax] = rng.start, rng.step, len(rng)
    if sz == s and all(v == 1 for v in sp):
        return x
    if r > 6:
        raise Unsupported(f"a rank-{r} tensor (rank <= 6)")
    ctx.need("slice")
    return ctx.op("slice", [x], {"starts": st, "steps": sp, "sizes": sz})


def map_pad_general(ctx: NodeContext):
    """ONNX Pad in modes constant, reflect and edge over any axes of a computed tensor (opsets 2-21: attribute
    or input pads, optional constant_value and axes). Negative pads crop first (a slice)."""
    x = ctx.tensor(0, "data")
    mode = ctx.attr("mode", "constant")
    if isinstance(mode, bytes):
        mode = mode.decode()
    if mode not in _PAD_MODES:
        raise Unsupported(f"mode={mode!r} (constant, reflect and edge are supported)")
    s = list(x.shape)
    r = len(s)
    if ctx.opset < 11:
        pads = ctx.attr("pads", ctx.attr("paddings"))
        pads = None if pads is None else [int(p) for p in pads]
        value, axes = float(ctx.attr("value", 0.0)), None
    else:
        p = ctx.constant(1, "pads")
        pads = None if p is None else int_vector(p, "pads")
        v = ctx.constant(2, "constant_value")
        if v is not None and np.asarray(v).dtype.kind not in "biuf":
            raise Unsupported(f"constant_value of dtype {np.asarray(v).dtype}")
        value = 0.0 if v is None or np.size(v) == 0 else float(np.asarray(v).reshape(-1)[0])
        a = ctx.constant(3, "axes")
        axes = None if a is None else [norm_axis(v, r, "axes") for v in int_vector(a, "axes")]
    if pads is None:
        raise Invalid("missing pads")
    axes = list(range(r)) if axes is None else axes
    if len(set(axes)) != len(axes):
        raise Invalid(f"axes {axes} repeat an axis")
    n = len(axes)
    if len(pads) != 2 * n:
        raise Invalid(f"pads {pads} should hold {2 * n} values (2 per padded axis)")
    before, after = [0] * r, [0] * r
    for i, ax in enumerate(axes):
        before[ax], after[ax] = pads[i], pads[n + i]
    if min(before + after) < 0:  # crop first
        st = [max(0, -b) for b in before]
        sz = [d - max(0, -b) - max(0, -a) for d, b, a in zip(s, before, after)]
        if min(sz) < 1:
            raise Unsupported(f"pads {pads} crop {s} to nothing")
        ctx.need("slice")
        x = ctx.op("slice", [x], {"starts": st, "steps": [1] * r, "sizes": sz})
        s = sz
        before, after = [max(0, b) for b in before], [max(0, a) for a in after]
    if mode == "reflect":
        for ax in range(r):
            if before[ax] >= s[ax] or after[ax] >= s[ax]:
                raise Unsupported(f"reflect pads ({before[ax]}, {after[ax]}) of axis {ax} of size {s[ax]} (each "
                                  "must be less than the size)")
    if not any(before) and not any(after):
        return x
    if r > 6:
        raise Unsupported(f"a rank-{r} tensor (rank <= 6)")
    ctx.need("pad_nd")
    return ctx.op("pad_nd", [x], {"pads": before + after, "mode": _PAD_MODES[mode], "value": value})


def map_matmul_general(ctx: NodeContext):
    """ONNX MatMul (numpy matmul) of two computed tensors, or of a tensor and a weight: batch dims broadcast,
    a 1-D A is a row and a 1-D B a column, their axis removed from the result."""
    a, b = ctx.tensor(0, "A"), ctx.tensor(1, "B")
    sa, sb = list(a.shape), list(b.shape)
    if not sa or not sb:
        raise Invalid(f"MatMul operands must be at least 1-D, got {sa} @ {sb}")
    if max(len(sa), len(sb)) > 6:
        raise Unsupported(f"operands of rank > 6 ({sa} @ {sb})")
    a2 = a if len(sa) > 1 else ctx.reshape(a, [1, sa[0]])
    b2 = b if len(sb) > 1 else ctx.reshape(b, [sb[0], 1])
    if list(a2.shape)[-1] != list(b2.shape)[-2]:
        raise Invalid(f"inner dimensions differ: {sa} @ {sb}")
    for da, db in zip(list(a2.shape)[-3::-1], list(b2.shape)[-3::-1]):
        if da != db and 1 not in (da, db):
            raise Invalid(f"batch dimensions of {sa} and {sb} do not broadcast")
    ctx.need("matmul")
    y = ctx.op("matmul", [a2, b2])
    ys = list(y.shape)
    if len(sa) == 1:
        del ys[-2]
    if len(sb) == 1:
        del ys[-1]
    return ctx.reshape(y, ys if ys else [1])


# ---- export ----

def _first(v):
    return v[0] if isinstance(v, (list, tuple)) else v


@exports("transpose")
def export_transpose(ex, ins, attrs, outs, name, I, O):
    perm = [int(p) for p in attrs["perm"]]
    if perm[0] != 0:
        ex.batch_specific.append(name)
    ex.node("Transpose", I, O, name, perm=perm)


@exports("slice")
def export_slice(ex, ins, attrs, outs, name, I, O):
    xs = ex.shape(ins[0])
    st, sp, sz = ([int(v) for v in attrs[k]] for k in ("starts", "steps", "sizes"))
    axes = [d for d in range(len(xs)) if not (st[d] == 0 and sp[d] == 1 and sz[d] == xs[d])]
    if 0 in axes:
        ex.batch_specific.append(name)
    if not axes:
        ex.node("Identity", I, O, name)
        return
    ends = []
    for d in axes:
        e = st[d] + sz[d] * sp[d]
        ends.append(e if e >= 0 else -xs[d] - 1)  # a backward slice reaching index 0: an end before it
    c = [ex.const(f"{name}.{k}", np.array(v, np.int64))
         for k, v in (("starts", [st[d] for d in axes]), ("ends", ends), ("axes", axes),
                      ("steps", [sp[d] for d in axes]))]
    ex.node("Slice", [I[0]] + c, O, name)


@exports("pad_nd")
def export_pad_nd(ex, ins, attrs, outs, name, I, O):
    mode = int(_first(attrs.get("mode", 0)))
    pads = ex.const(f"{name}.pads", np.array([int(p) for p in attrs["pads"]], np.int64))
    ins_ = [I[0], pads]
    if mode == 0:
        ins_.append(ex.const(f"{name}.value", np.array(float(attrs.get("value", 0.0)), np.float32)))
    ex.node("Pad", ins_, O, name, mode=_ONNX_PAD_MODE[mode])


@exports("matmul")
def export_matmul(ex, ins, attrs, outs, name, I, O):
    if attrs.get("sum_to"):
        ex.problems.append((name, "matmul", "a matmul summed over batch dims (a gradient) has no ONNX form"))
        return
    I = list(I)
    for k, flag in enumerate(("trans_a", "trans_b")):
        if int(_first(attrs.get(flag, 0))):
            r = len(ex.shape(ins[k]))
            perm = list(range(r - 2)) + [r - 1, r - 2]
            t, j = f"{I[k]}.T", 1
            while t in ex.taken:
                t, j = f"{I[k]}.T{j}", j + 1
            ex.taken.add(t)
            ex.node("Transpose", [I[k]], [t], f"{name}.{flag}", perm=perm)
            I[k] = t
    ex.node("MatMul", I, O, name)
